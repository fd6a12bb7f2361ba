"""`convdispatch linkedin`: conversion rules and campaign associations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from dispatcher import ConfigurationError

if TYPE_CHECKING:
    from workers.linkedin_rules import RuleManager
from workers.cli.common import console

linkedin = typer.Typer(
    help="LinkedIn conversion rules and campaign associations.", no_args_is_help=True
)


@contextmanager
def _rules() -> Iterator[RuleManager]:
    """A rule manager that knows registered destinations too (errors go to `main`)."""
    from dispatcher import get_settings
    from dispatcher.registry import Registry
    from dispatcher.storage import open_store
    from workers.linkedin_rules import RuleManager

    settings = get_settings()
    client = open_store(settings)
    Registry(settings, client).sync(force=True)
    with RuleManager(settings, client) as manager:
        yield manager


@linkedin.command("rules")
def linkedin_rules(
    destination: str,
    account: Annotated[str | None, typer.Option(help="sponsoredAccount id")] = None,
) -> None:
    """The ad account's conversion rules, as LinkedIn lists them."""
    table = Table()
    for column in ("urn", "name", "type", "enabled", "click/view days", "attribution"):
        table.add_column(column, overflow="fold")
    with _rules() as manager:
        for rule in manager.find(destination, account):
            windows = (
                f"{rule.get('postClickAttributionWindowSize')}/"
                f"{rule.get('viewThroughAttributionWindowSize')}"
            )
            table.add_row(
                f"urn:lla:llaPartnerConversion:{rule['id']}", str(rule.get("name")),
                str(rule.get("type")), str(rule.get("enabled")), windows,
                str(rule.get("attributionType")),
            )  # fmt: skip
    console.print(table)


@linkedin.command("ensure")
def linkedin_ensure(destination: str) -> None:
    """Create or update the destination's configured `rules` and associate their campaigns
    (idempotent: run it on every deployment)."""
    with _rules() as manager:
        ensured = manager.ensure(destination)
        if not ensured:
            console.print(f"{destination} has no rules configured: nothing to ensure")
        for done in ensured:
            changed = f" ({', '.join(done.changed)})" if done.changed else ""
            campaigns = f", {done.campaigns} campaign(s) associated" if done.campaigns else ""
            console.print(f"{done.name}: {done.action}{changed} {done.urn}{campaigns}")


@linkedin.command("create")
def linkedin_create(
    destination: str,
    name: Annotated[str, typer.Option(help="The rule's name")],
    type_: Annotated[str, typer.Option("--type", help="LEAD, PURCHASE, SIGN_UP...")],
    account: Annotated[str | None, typer.Option(help="sponsoredAccount id")] = None,
    post_click_days: int = 30,
    view_through_days: int = 7,
    attribution_type: str = "LAST_TOUCH_BY_CAMPAIGN",
    enabled: bool = True,
    auto_association: Annotated[
        str | None, typer.Option(help="ALL_CAMPAIGNS or OBJECTIVE_BASED")
    ] = None,
) -> None:
    """Create a conversion rule (conversionMethod CONVERSIONS_API)."""
    from pydantic import ValidationError

    from dispatcher.settings import LinkedInRule

    fields = {
        "name": name, "type": type_, "account": account, "post_click_days": post_click_days,
        "view_through_days": view_through_days, "attribution_type": attribution_type,
        "enabled": enabled, "auto_association": auto_association,
    }  # fmt: skip
    try:
        rule = LinkedInRule.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "the rule"
        raise ConfigurationError(f"{option}: {first['msg']}") from None
    with _rules() as manager:
        console.print(manager.create(destination, rule))


@linkedin.command("enable")
def linkedin_enable(destination: str, rule: str) -> None:
    """Enable a rule (id or URN)."""
    with _rules() as manager:
        manager.set_enabled(destination, rule, True)
    console.print(f"{rule} enabled")


@linkedin.command("disable")
def linkedin_disable(destination: str, rule: str) -> None:
    """Disable a rule (id or URN): it stops matching conversions."""
    with _rules() as manager:
        manager.set_enabled(destination, rule, False)
    console.print(f"{rule} disabled")


@linkedin.command("rename")
def linkedin_rename(destination: str, rule: str, name: str) -> None:
    """Rename a rule (id or URN)."""
    with _rules() as manager:
        manager.update(destination, rule, {"name": name})
    console.print(f"{rule} renamed to {name}")


@linkedin.command("associate")
def linkedin_associate(destination: str, rule: str, campaigns: list[str]) -> None:
    """Associate campaigns (ids or URNs) with a rule (id or URN), in batch calls."""
    with _rules() as manager:
        n = manager.associate(destination, rule, campaigns)
    console.print(f"{n} campaign(s) associated with {rule}")
