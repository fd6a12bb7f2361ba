"""What every `convdispatch` command shares: the consoles and the tenant filter."""

from __future__ import annotations

import os
from collections.abc import Mapping

from rich.console import Console

from dispatcher import Destination

# soft_wrap: a line longer than the terminal (a URN, a reason) is never broken in two, so
# scripts can read one item per line; tables still fit the width. No markup, emoji codes
# or highlighting: what is printed (reasons, ids, names) is data, shown as it is, so
# `[/x]` or `:thumbs_up:` in a pause reason is neither an error nor a picture. Styles are
# given as `rich.text.Text`.
console = Console(soft_wrap=True, markup=False, emoji=False, highlight=False)
errors = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)


def of_tenant(destinations: Mapping[str, Destination], tenant: str | None) -> list[str]:
    return [n for n, d in destinations.items() if tenant is None or d.tenant == tenant]


def nothing_configured() -> str:
    where = os.environ.get("CONVDISP_CONFIG") or "config/dispatcher.toml (not found)"
    return f"no destinations configured (config: {where}); give --config or CONVDISP_CONFIG"
