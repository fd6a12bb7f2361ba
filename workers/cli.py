"""`convdispatch`: run the embedded stack, inspect destinations, handle dead letters."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from dispatcher import ConfigurationError, Control, DeadLetters, Destination, Selection
from dispatcher.deadletters import known_platform
from dispatcher.errors import UnknownDestinationError

if TYPE_CHECKING:
    from dispatcher.registry import Registry
    from workers.linkedin_rules import RuleManager

app = typer.Typer(
    help="Asynchronous, queue-based conversion dispatcher.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dead = typer.Typer(help="List, replay and purge dead letters.", no_args_is_help=True)
app.add_typer(dead, name="dead")
orphans = typer.Typer(help="Events of destinations no longer configured.", no_args_is_help=True)
app.add_typer(orphans, name="orphans")
linkedin = typer.Typer(
    help="LinkedIn conversion rules and campaign associations.", no_args_is_help=True
)
app.add_typer(linkedin, name="linkedin")
registry_cli = typer.Typer(
    help="Destinations and routes registered at runtime (no restart).", no_args_is_help=True
)
app.add_typer(registry_cli, name="destinations")
# soft_wrap: a line longer than the terminal (a URN, a reason) is never broken in two, so
# scripts can read one item per line; tables still fit the width.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
VERBOSE = {"on": False}


@app.callback()
def options(
    config: Annotated[
        Path | None, typer.Option(help="The TOML config (default: $CONVDISP_CONFIG).")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis of events and state (default: from the config).")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Show tracebacks of errors.")] = False,
) -> None:
    """Options every command takes."""
    from dispatcher.settings import get_settings

    _check_config(config)
    if config is not None:
        os.environ["CONVDISP_CONFIG"] = str(config)
    if redis_url is not None:
        os.environ["CONVDISP_REDIS_URL"] = redis_url
    VERBOSE["on"] = verbose
    get_settings.cache_clear()


def _check_config(config: Path | None) -> None:
    """A config that names a directory, or a --config file that is missing, is an error
    (CONVDISP_CONFIG naming a missing file is refused by the settings themselves)."""
    given = "--config" if config is not None else "CONVDISP_CONFIG"
    named = os.environ.get("CONVDISP_CONFIG")
    path = config if config is not None else Path(named) if named else None
    if path is not None and path.is_dir():
        raise ConfigurationError(f"{given} names {path}, a directory: name a TOML file")
    if config is not None and not config.exists():
        raise ConfigurationError(f"--config names {config}, which does not exist")


def main() -> None:
    """The `convdispatch` entry point: a user error is one line on stderr and exit 1."""
    from workers.errors import user_error

    try:
        app()
    except Exception as exc:  # typer/click handle usage errors themselves (exit 2)
        message = user_error(exc)
        if message is None or VERBOSE["on"]:
            raise
        errors.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


@app.command()
def up(
    load: Annotated[
        int, typer.Option(min=0, help="Sample purchases to enqueue (x4 events).")
    ] = 20_000,
    var: Annotated[Path, typer.Option(help="Where Redis data and logs go.")] = Path("var/embedded"),
    redis_port: Annotated[int, typer.Option(help="The embedded Redis's port.")] = 6390,
    flower_port: Annotated[int, typer.Option(help="Flower's port.")] = 5555,
    exit_when_done: Annotated[
        bool,
        typer.Option(help="Stop once the platforms' APIs took the load (backlog 0)."),
    ] = False,
    wait_jobs: Annotated[
        bool,
        typer.Option(help="With --exit-when-done: also wait for Yandex uploads, vNative imports."),
    ] = False,
    keep_data: Annotated[
        bool, typer.Option(help="Keep the embedded Redis's data from an earlier run.")
    ] = False,
) -> None:
    """Run everything on this machine (embedded Redis, sandboxes, workers, Flower) until
    Ctrl-C, SIGTERM or SIGHUP."""
    from workers.embedded import Options, run

    options = Options(load, var, redis_port, flower_port, exit_when_done, keep_data, wait_jobs)
    raise typer.Exit(run(options, console, errors))


@app.command()
def status(
    destination: Annotated[list[str] | None, typer.Argument()] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's destinations.")] = None,
    top: Annotated[int, typer.Option(min=0, help="Show this many destinations (0: all).")] = 50,
    sort: Annotated[
        str, typer.Option(help="Order: backlog, age (oldest waiting event), errors, name.")
    ] = "backlog",
) -> None:
    """Backlog, in-flight, delivered, dead and pause state of destinations: a totals line,
    then the `top` destinations by `sort`."""
    orders = {
        "backlog": lambda s: (-s.backlog, s.destination),
        "age": lambda s: (s.oldest_ms or float("inf"), s.destination),
        "errors": lambda s: (-(s.paused * 10**9 + s.failures), s.destination),
        "name": lambda s: (0, s.destination),
    }
    if sort not in orders:
        raise ConfigurationError(f"--sort must be one of {', '.join(orders)}, not {sort!r}")
    control = Control()
    control.dispatcher.registry.sync(force=True)
    configured = control.dispatcher.settings.destinations
    names = destination or _of_tenant(configured, tenant)
    if tenant is not None and not names:
        raise ConfigurationError(
            f"no destination has tenant {tenant!r} ({len(configured)} configured)"
        )
    orphaned = [] if destination or tenant else control.orphans()  # orphans have no tenant
    if not names and not orphaned:
        raise ConfigurationError(_nothing_configured())
    found = sorted(control.statuses(names), key=orders[sort])
    shown = found if top == 0 else found[:top]
    table = Table()
    for column in ("destination", "platform", "backlog", "in flight", "delivered", "dead"):
        table.add_column(column, overflow="fold")
    table.add_column("state", overflow="fold")
    for s in shown:
        state = f"paused: {s.pause_reason}" if s.paused else (s.last_error or "ok")
        table.add_row(
            s.destination, s.platform, str(s.backlog), str(s.in_flight), str(s.delivered),
            str(s.dead), state,
        )  # fmt: skip
    for orphan in orphaned:
        state = "orphaned: not configured (convdispatch orphans dead-letter)"
        table.add_row(orphan.destination, orphan.platform, str(orphan.backlog), "", "", "", state)
    console.print(table)
    paused = sum(s.paused for s in found)
    console.print(
        f"{len(found)} destination(s): backlog {sum(s.backlog for s in found):,}, "
        f"{paused} paused, {sum(bool(s.last_error) for s in found)} with errors"
        + (f"; showing {len(shown)} by {sort} (--top 0 for all)" if len(shown) < len(found) else "")
    )


def _of_tenant(destinations: Mapping[str, Destination], tenant: str | None) -> list[str]:
    return [n for n, d in destinations.items() if tenant is None or d.tenant == tenant]


def _nothing_configured() -> str:
    where = os.environ.get("CONVDISP_CONFIG") or "config/dispatcher.toml (not found)"
    return f"no destinations configured (config: {where}); give --config or CONVDISP_CONFIG"


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
    from dispatcher.registry import Registry
    from dispatcher.storage import open_store
    from workers.metrics import registry

    settings = get_settings()
    client = open_store(settings)
    try:
        start_http_server(port, address, registry(settings, client, Registry(settings, client)))
    except (OSError, OverflowError) as exc:  # port taken or out of range, address unknown
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigurationError(f"cannot serve metrics on {address}:{port}: {reason}") from exc
    console.print(f"metrics on http://{address}:{port}/metrics")
    while True:
        time.sleep(3600)


@app.command()
def pause(destination: str, reason: str = "paused by operator") -> None:
    """Stop delivering to a destination; its events keep waiting."""
    Control().pause(destination, reason)
    console.print(f"{destination} paused: {reason}")


@app.command()
def resume(destination: str) -> None:
    """Deliver again to a paused destination."""
    Control().resume(destination)
    console.print(f"{destination} resumed")


@app.command()
def jobs(platform: str, limit: Annotated[int, typer.Option(min=1)] = 20) -> None:
    """Recent background jobs (Yandex uploads, vNative imports) and what became of them."""
    from datetime import UTC, datetime

    from dispatcher import get_settings
    from dispatcher.storage import open_store
    from workers.jobs import recent

    table = Table()
    for column in ("job", "destination", "submitted", "events", "state", "detail"):
        table.add_column(column, overflow="fold")
    settings = get_settings()
    if known_platform(platform) not in ("yandex", "vnative"):
        raise ConfigurationError(f"{platform} has no background jobs (yandex and vnative do)")
    for job in recent(open_store(settings), platform, limit):
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
    return Selection(ids or None, destination, _when(since), _when(until), reason)


def _when(text: str | None) -> int | None:
    """An ISO 8601 time or an age such as 90s, 30m, 2h or 7d, as epoch ms."""
    import time
    from datetime import UTC, datetime

    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1000)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"cannot read time {text!r}: use ISO 8601 or 30m, 2h, 7d"
        ) from None
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


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
    ours = set(_of_tenant(letters_all.dispatcher.settings.destinations, tenant))
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
            f"unknown destination {destination!r} (configured: {', '.join(sorted(known))}) "
            f"and {platform} holds no dead letters of it"
        )
    return letters


@dead.command("show")
def dead_show(platform: str, letter_id: str) -> None:
    """One dead letter: every field, the platform's answer and the (hashed) event."""
    import json
    from datetime import UTC, datetime

    if not re.fullmatch(r"([0-9]+:)?[0-9]+(-[0-9]+)?", letter_id):  # not a stream id
        raise ConfigurationError(f"no dead letter {letter_id} in {known_platform(platform)}")
    letter = DeadLetters().show(platform, letter_id)
    at = datetime.fromtimestamp(letter.failed_at_ms / 1000, UTC)
    rows = {
        "id": letter.id, "destination": letter.destination, "event id": letter.event_id,
        "dead since": f"{at:%Y-%m-%d %H:%M:%S} UTC", "attempts": str(letter.attempts),
        "HTTP status": str(letter.status or ""), "reason": letter.reason,
        "platform answered": letter.excerpt,
        "event": json.dumps(letter.event, indent=2, sort_keys=True),
    }  # fmt: skip
    for key, value in rows.items():
        console.print(f"[bold]{key}:[/] ", end="")
        console.print(value, markup=False, highlight=False)


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
    """Replay or purge the chosen dead letters of `platform`, and say how many. A replay
    (a dry one too) refuses up front when a letter's destination is unknown."""
    letters = _dead_letters(platform, chosen.destination)
    if operation == "replay":
        for letter in letters.iter(platform, selection=chosen):
            letters.dispatcher.settings.destination(letter.destination)
    take = letters.replay if operation == "replay" else letters.purge
    n = take(platform, selection=chosen, dry_run=dry_run)
    done = {"replay": "replayed", "purge": "purged"}[operation]
    console.print(f"would {operation} {n}" if dry_run else f"{done} {n}")


@app.command("trace")
def trace_event(
    event_id: str, destination: Annotated[str | None, typer.Option(help="Only here.")] = None
) -> None:
    """Where an event is: waiting, in flight, delivered (which call, which job) or dead (why)."""
    from dispatcher.trace import iso

    for found in Control().trace(event_id, destination):
        console.print(f"[bold]{found.destination}[/] {found.state}: ", end="")
        console.print(found.detail, markup=False, highlight=False)
        for key, value in found.facts.items():
            if key.endswith("_ms") and isinstance(value, int):
                value = "now" if key == "due_ms" and value == 0 else iso(value)  # 0: due now
            console.print(f"  {key}: {value}", markup=False, highlight=False)
        if found.state == "unknown" and found.destination == "*":
            raise typer.Exit(1)


@app.command()
def check(
    online: Annotated[
        bool, typer.Option(help="Also make one harmless authenticated call per destination.")
    ] = False,
) -> None:
    """Check the configuration, credentials, routes and Redis's durability settings."""
    from dispatcher import get_settings
    from dispatcher.check import offline
    from dispatcher.storage import open_store

    settings = get_settings()
    client = open_store(settings)
    found = offline(settings, client)  # registered destinations included
    if not settings.destinations:
        raise ConfigurationError(_nothing_configured())
    if online:
        from workers.probe import online as online_checks
        from workers.request import PlatformClient

        with PlatformClient() as http:
            found += online_checks(settings, client, http)
    marks = {"ok": "[green]ok[/]   ", "warn": "[yellow]warn[/] ", "error": "[red]error[/]"}
    for finding in found:
        console.print(f"{marks[finding.level]} {finding.subject}: ", end="")
        console.print(finding.message, markup=False, highlight=False)
    bad = sum(f.level == "error" for f in found)
    if bad:
        errors.print(f"{bad} problem(s) found", highlight=False)
        raise typer.Exit(1)


def _registry() -> Registry:
    from dispatcher import Dispatcher

    return Dispatcher().registry


@registry_cli.command("list")
def destinations_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's.")] = None,
) -> None:
    """Every destination, where it is declared (config or registry) and its state."""
    table = Table()
    for column in ("destination", "platform", "tenant", "source", "state", "credentials"):
        table.add_column(column, overflow="fold")
    for name, dest, source in _registry().entries():
        if tenant is not None and dest.tenant != tenant:
            continue
        state = "disabled" if not dest.enabled else "draining" if dest.draining else "enabled"
        credentials = f"env {dest.token_env}" if dest.token_env else (
            "stored (encrypted)" if source == "registry" and dest.token else "inline"
        )  # fmt: skip
        if dest.oauth is not None:
            credentials = "oauth"
        table.add_row(name, dest.platform, dest.tenant or "", source, state, credentials)
    console.print(table)


def _fields(pairs: list[str]) -> dict[str, object]:
    """key=value settings. A value is text (a number or boolean field converts "5" or
    "true" itself), unless it starts with { or [: JSON (oauth={...}, rules=[...])."""
    import json

    fields: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"{pair!r}: give settings as key=value")
        fields[key] = value
        if value.startswith(("{", "[")):
            try:
                fields[key] = json.loads(value)
            except ValueError as exc:
                raise ConfigurationError(f"{key}: not valid JSON ({exc})") from None
    return fields


@registry_cli.command("add")
def destinations_add(
    name: str,
    settings: Annotated[
        list[str], typer.Argument(help="platform=pinterest token_env=PIN_TOKEN ad_account_id=...")
    ],
) -> None:
    """Register a destination; every producer and worker sees it within seconds."""
    _registry().add(name, _fields(settings))
    console.print(f"{name} added")


@registry_cli.command("update")
def destinations_update(name: str, settings: list[str]) -> None:
    """Change a destination's settings (token=..., tenant=..., ...)."""
    _registry().update(name, **_fields(settings))
    console.print(f"{name} updated")


@registry_cli.command("disable")
def destinations_disable(name: str) -> None:
    """Refuse new events for a destination and pause its delivery."""
    _registry().set_enabled(name, False)
    console.print(f"{name} disabled")


@registry_cli.command("enable")
def destinations_enable(name: str) -> None:
    """Take events for a disabled destination again."""
    _registry().set_enabled(name, True)
    console.print(f"{name} enabled")


@registry_cli.command("remove")
def destinations_remove(
    name: str,
    backlog: Annotated[
        str, typer.Option(help="What becomes of waiting events: drain, dead-letter or keep.")
    ],
) -> None:
    """Remove a registered destination; --backlog says what happens to its waiting events."""
    if backlog not in ("drain", "dead-letter", "keep"):
        raise ConfigurationError(f"--backlog must be drain, dead-letter or keep, not {backlog!r}")
    waiting = Control().remove_destination(name, backlog)  # type: ignore[arg-type]
    done = {"drain": "removed once its backlog is delivered", "keep": "removed; its events stay",
            "dead-letter": "removed; its events are dead letters"}  # fmt: skip
    console.print(f"{name}: {done[backlog] if waiting else 'removed'} ({waiting} waiting)")


@registry_cli.command("route")
def destinations_route(
    event: str,
    destination: str,
    settings: Annotated[
        list[str] | None, typer.Argument(help="event_name=checkout target=goal rule=...")
    ] = None,
) -> None:
    """Register a route: `event` goes to `destination` (rule=..., target=..., sub1=...)."""
    _registry().add_route({"event": event, "destination": destination, **_fields(settings or [])})
    console.print(f"{event} -> {destination}")


@registry_cli.command("unroute")
def destinations_unroute(event: str, destination: str) -> None:
    """Remove a registered route."""
    registry = _registry()
    if not registry.remove_route(event, destination):
        declared = any((r.event, r.destination) == (event, destination)
                       for r in registry.declared_routes)  # fmt: skip
        where = ": it is declared in the configuration, edit it there" if declared else ""
        raise ConfigurationError(f"no registered route {event} -> {destination}{where}")
    console.print(f"{event} -> {destination} removed")


@registry_cli.command("new-key")
def destinations_new_key() -> None:
    """Print a new key for CONVDISP_SECRET_KEYS (put it first to rotate, then `rotate-key`)."""
    from dispatcher.registry import new_key

    console.print(new_key(), markup=False, highlight=False)


@registry_cli.command("rotate-key")
def destinations_rotate_key() -> None:
    """Re-encrypt every stored token with the first key of CONVDISP_SECRET_KEYS."""
    console.print(f"{_registry().rotate()} token(s) re-encrypted")


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


if __name__ == "__main__":
    main()
