"""`convdispatch`: run the embedded stack, inspect destinations, handle dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from dispatcher import Control, DeadLetters

if TYPE_CHECKING:
    from workers.linkedin_rules import RuleManager

app = typer.Typer(help="Asynchronous, queue-based conversion dispatcher.", no_args_is_help=True)
dead = typer.Typer(help="List, replay and purge dead letters.", no_args_is_help=True)
app.add_typer(dead, name="dead")
orphans = typer.Typer(help="Events of destinations no longer configured.", no_args_is_help=True)
app.add_typer(orphans, name="orphans")
linkedin = typer.Typer(
    help="LinkedIn conversion rules and campaign associations.", no_args_is_help=True
)
app.add_typer(linkedin, name="linkedin")
console = Console()
errors = Console(stderr=True)


@app.command()
def up(
    load: Annotated[int, typer.Option(help="Sample events to enqueue.")] = 20_000,
    var: Annotated[Path, typer.Option(help="Where Redis data and logs go.")] = Path("var/embedded"),
    redis_port: int = 6390,
    flower_port: int = 5555,
    exit_when_done: Annotated[bool, typer.Option(help="Stop once the load is delivered.")] = False,
    keep_data: Annotated[
        bool, typer.Option(help="Keep the embedded Redis's data from an earlier run.")
    ] = False,
) -> None:
    """Run everything on this machine (embedded Redis, sandboxes, workers, Flower)."""
    from workers.embedded import Options, run

    options = Options(load, var, redis_port, flower_port, exit_when_done, keep_data)
    raise typer.Exit(run(options, console))


@app.command()
def status(destination: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Backlog, in-flight, delivered, dead and pause state of destinations."""
    control = Control()
    names = destination or list(control.dispatcher.settings.destinations)
    table = Table()
    for column in ("destination", "platform", "backlog", "in flight", "delivered", "dead", "state"):
        table.add_column(column)
    for name in names:
        s = control.status(name)
        state = f"paused: {s.pause_reason}" if s.paused else (s.last_error or "ok")
        table.add_row(
            name, s.platform, str(s.backlog), str(s.in_flight), str(s.delivered), str(s.dead), state
        )
    for orphan in [] if destination else control.orphans():
        state = "orphaned: not configured (convdispatch orphans dead-letter)"
        table.add_row(orphan.destination, orphan.platform, str(orphan.backlog), "", "", "", state)
    console.print(table)


@orphans.command("list")
def orphans_list() -> None:
    """Streams with events whose destination is no longer configured."""
    table = Table()
    for column in ("destination", "platform", "backlog"):
        table.add_column(column)
    for orphan in Control().orphans():
        table.add_row(orphan.destination, orphan.platform or "?", str(orphan.backlog))
    console.print(table)


@orphans.command("dead-letter")
def orphans_dead_letter(
    destination: str,
    platform: Annotated[str, typer.Option(help="If the stream does not record it.")] = "",
) -> None:
    """Move an orphaned stream's events to its platform's dead letters (replayable)."""
    moved = Control().dead_letter_orphan(destination, platform)
    console.print(f"{moved} event(s) of {destination} dead-lettered")


@app.command()
def metrics(port: int = 9108, address: str = "127.0.0.1") -> None:
    """Serve Prometheus metrics (backlog, delivered, dead, retried, warnings, jobs)."""
    import time

    from prometheus_client import start_http_server

    from dispatcher import get_settings
    from dispatcher.storage import connect
    from workers.metrics import registry

    settings = get_settings()
    start_http_server(port, address, registry(settings, connect(settings.redis_url)))
    console.print(f"metrics on http://{address}:{port}/metrics")
    while True:
        time.sleep(3600)


@app.command()
def pause(destination: str, reason: str = "paused by operator") -> None:
    """Stop delivering to a destination; its events keep waiting."""
    Control().pause(destination, reason)


@app.command()
def resume(destination: str) -> None:
    """Deliver again to a paused destination."""
    Control().resume(destination)


@app.command()
def jobs(platform: str, limit: int = 20) -> None:
    """Recent background jobs (Yandex uploads, vNative imports) and what became of them."""
    from datetime import UTC, datetime

    from dispatcher import get_settings
    from dispatcher.storage import connect
    from workers.jobs import recent

    table = Table()
    for column in ("job", "destination", "submitted", "events", "state", "detail"):
        table.add_column(column)
    settings = get_settings()
    for job in recent(connect(settings.redis_url), platform, limit):
        submitted = datetime.fromtimestamp(job.submitted_at_ms / 1000, UTC)
        state = f"[red]{job.state}[/]" if job.failed else job.state
        table.add_row(
            job.id,
            job.destination,
            f"{submitted:%Y-%m-%d %H:%M:%S}",
            str(job.events),
            state,
            job.detail,
        )
    console.print(table)


@dead.command("list")
def dead_list(platform: str, destination: str | None = None, limit: int = 50) -> None:
    """Show dead letters, oldest first."""
    table = Table()
    for column in ("id", "destination", "event id", "attempts", "status", "reason"):
        table.add_column(column)
    for letter in DeadLetters().list(platform, destination, limit):
        table.add_row(
            letter.id, letter.destination, letter.event_id, str(letter.attempts),
            str(letter.status or ""), letter.reason[:120],
        )  # fmt: skip
    console.print(table)


@dead.command("replay")
def dead_replay(
    platform: str, ids: list[str] | None = None, destination: str | None = None
) -> None:
    """Send dead letters again (all, one destination's, or the given ids)."""
    console.print(f"replayed {DeadLetters().replay(platform, ids or None, destination)}")


@dead.command("purge")
def dead_purge(platform: str, ids: list[str] | None = None, destination: str | None = None) -> None:
    """Delete dead letters for good."""
    console.print(f"purged {DeadLetters().purge(platform, ids or None, destination)}")


@contextmanager
def _rules() -> Iterator[RuleManager]:
    """A rule manager; a refusal or configuration error is one line on stderr, exit 1."""
    from dispatcher import DispatcherError, get_settings
    from workers.linkedin_rules import RuleManager

    manager = None
    try:
        manager = RuleManager(get_settings())
        yield manager
    except DispatcherError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    finally:
        if manager is not None:
            manager.close()


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
        for done in manager.ensure(destination):
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
        errors.print(f"error: {'.'.join(map(str, first['loc']))}: {first['msg']}", markup=False)
        raise typer.Exit(2) from None
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


if __name__ == "__main__":
    app()
