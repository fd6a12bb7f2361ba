"""`convdispatch dead`: list, show, replay and purge dead letters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table
from rich.text import Text

from dispatcher import ConfigurationError, DeadLetters, Selection
from dispatcher.deadletters import known_platform, valid_letter_id
from dispatcher.errors import UnknownDestinationError
from dispatcher.identity import masked

if TYPE_CHECKING:
    pass
from workers.cli.common import console, of_tenant

dead = typer.Typer(help="List, replay and purge dead letters.", no_args_is_help=True)


Since = Annotated[
    str | None, typer.Option(help="Dead-lettered at or after: ISO time or an age (30m, 2h, 7d).")
]
Until = Annotated[str | None, typer.Option(help="Dead-lettered before: ISO time or an age.")]
Reason = Annotated[str | None, typer.Option(help="The reason contains this text.")]
DryRun = Annotated[bool, typer.Option(help="Only count what would be taken.")]


def _selection(
    ids: list[str] | None, destination: str | None, since: str | None, until: str | None,
    reason: str | None,
) -> Selection:  # fmt: skip
    return Selection(
        [valid_letter_id(i) for i in ids] if ids else None,
        destination,
        _when(since),
        _when(until),
        reason,
    )


def _when(text: str | None) -> int | None:
    """An ISO 8601 time or an age such as 90s, 30m, 2h or 7d, as epoch ms."""
    import time
    from datetime import UTC, datetime

    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return max(0, int((time.time() - int(text[:-1]) * units[text[-1]]) * 1000))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"cannot read time {text!r}: use ISO 8601 or 30m, 2h, 7d"
        ) from None
    return max(0, int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000))


@dead.command("list")
def dead_list(
    platform: str, destination: str | None = None,
    limit: Annotated[int, typer.Option(min=1)] = 50, since: Since = None, until: Until = None,
    reason: Reason = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's destinations.")] = None,
) -> None:  # fmt: skip
    """Show dead letters, oldest first (reasons in full; `dead show` for one in detail)."""
    table = Table()
    for column in ("id", "destination", "event id", "attempts", "status", "reason"):
        table.add_column(column, overflow="fold")
    chosen = _selection(None, destination, since, until, reason)
    letters_all = _dead_letters(platform, destination)
    ours = set(of_tenant(letters_all.dispatcher.settings.destinations, tenant))
    letters = (
        x for x in letters_all.iter(platform, selection=chosen)
        if tenant is None or x.destination in ours
    )  # fmt: skip
    for letter, _ in zip(letters, range(limit), strict=False):
        table.add_row(
            letter.id, letter.destination, letter.event_id, str(letter.attempts),
            str(letter.status or ""), letter.reason,
        )  # fmt: skip
    if not table.rows:
        console.print(f"no dead letters in {platform} match")
        return
    console.print(table)


def _dead_letters(platform: str, destination: str | None) -> DeadLetters:
    """Dead letters of `platform`, registered destinations known. An unknown `destination`
    is an error, unless dead letters of it are there (a removed destination's)."""
    letters = DeadLetters()
    letters.dispatcher.registry.sync(force=True)
    known = letters.dispatcher.settings.destinations
    if destination is None or destination in known:
        return letters
    if next(letters.iter(known_platform(platform), destination), None) is None:
        raise UnknownDestinationError(
            f"unknown destination {masked(destination)!r} (configured: {', '.join(sorted(known))}) "
            f"and {platform} holds no dead letters of it"
        )
    return letters


@dead.command("show")
def dead_show(platform: str, letter_id: str) -> None:
    """One dead letter: every field, the platform's answer and the (hashed) event."""
    import json
    from datetime import UTC, datetime

    letter = DeadLetters().show(platform, valid_letter_id(letter_id))
    at = datetime.fromtimestamp(letter.failed_at_ms / 1000, UTC)
    rows = {
        "id": letter.id, "destination": letter.destination, "event id": letter.event_id,
        "dead since": f"{at:%Y-%m-%d %H:%M:%S} UTC", "attempts": str(letter.attempts),
        "HTTP status": str(letter.status or ""), "reason": letter.reason,
        "platform answered": letter.excerpt,
        "event": json.dumps(letter.event, indent=2, sort_keys=True),
    }  # fmt: skip
    for key, value in rows.items():
        console.print(Text.assemble((f"{key}:", "bold"), " ", value))


@dead.command("replay")
def dead_replay(
    platform: str, ids: list[str] | None = None, destination: str | None = None,
    since: Since = None, until: Until = None, reason: Reason = None, dry_run: DryRun = False,
) -> None:  # fmt: skip
    """Send dead letters again (all, or those the options select)."""
    _take("replay", platform, _selection(ids, destination, since, until, reason), dry_run)


@dead.command("purge")
def dead_purge(
    platform: str, ids: list[str] | None = None, destination: str | None = None,
    since: Since = None, until: Until = None, reason: Reason = None, dry_run: DryRun = False,
) -> None:  # fmt: skip
    """Delete dead letters for good (all, or those the options select)."""
    _take("purge", platform, _selection(ids, destination, since, until, reason), dry_run)


def _take(
    operation: Literal["replay", "purge"], platform: str, chosen: Selection, dry_run: bool
) -> None:
    """Replay or purge the chosen dead letters of `platform`, and say how many."""
    letters = _dead_letters(platform, chosen.destination)
    take = letters.replay if operation == "replay" else letters.purge
    n = take(platform, selection=chosen, dry_run=dry_run)
    done = {"replay": "replayed", "purge": "purged"}[operation]
    console.print(f"would {operation} {n}" if dry_run else f"{done} {n}")
