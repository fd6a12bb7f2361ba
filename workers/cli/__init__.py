"""`convdispatch`: run the embedded stack, inspect destinations, handle dead letters."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from dispatcher import ConfigurationError, Control
from dispatcher.deadletters import known_platform
from dispatcher.settings import DAY_S
from workers.cli.common import console, errors, nothing_configured, of_tenant
from workers.cli.dead import dead
from workers.cli.destinations import registry_cli
from workers.cli.linkedin import linkedin
from workers.oauth import expiry_words

app = typer.Typer(
    help="Asynchronous, queue-based conversion dispatcher.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dead, name="dead")
orphans = typer.Typer(help="Events of destinations no longer configured.", no_args_is_help=True)
app.add_typer(orphans, name="orphans")
app.add_typer(linkedin, name="linkedin")
app.add_typer(registry_cli, name="destinations")
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
        errors.print(f"error: {_masked_quotes(message)}", soft_wrap=True)
        sys.exit(1)


def _masked_quotes(message: str) -> str:
    """`message` with every quoted value that is an email address or a phone number shown
    as `<email address>` / `<phone number>`: an operator's typo (an email given as a
    destination) is not repeated into a terminal log."""
    from dispatcher.identity import masked

    return re.sub(r"'([^'\n]{1,256})'", lambda m: f"'{masked(m.group(1))}'", message)


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
    names = destination or of_tenant(configured, tenant)
    if tenant is not None and not names:
        raise ConfigurationError(
            f"no destination has tenant {tenant!r} ({len(configured)} configured)"
        )
    orphaned = [] if destination or tenant else control.orphans()  # orphans have no tenant
    if not names and not orphaned:
        raise ConfigurationError(nothing_configured())
    found = sorted(control.statuses(names), key=orders[sort])
    shown = found if top == 0 else found[:top]
    table = Table()
    for column in ("destination", "platform", "backlog", "in flight", "delivered", "dead"):
        table.add_column(column, overflow="fold")
    table.add_column("state", overflow="fold")
    warn_s = control.dispatcher.settings.linkedin.refresh_token_warn_days * DAY_S
    for s in shown:
        state = f"paused: {s.pause_reason}" if s.paused else (s.last_error or "ok")
        if s.refresh_token_expires_at and s.refresh_token_expires_at - time.time() < warn_s:
            state += f"; refresh token {expiry_words(s.refresh_token_expires_at, time.time())}"
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
def jobs(platform: str, limit: Annotated[int, typer.Option(min=1, max=100_000)] = 20) -> None:
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
        state = Text(job.state, style="red" if job.failed else "")
        table.add_row(
            job.id,
            job.destination,
            f"{submitted:%Y-%m-%d %H:%M:%S}",
            str(job.events),
            state,
            job.detail,
        )
    console.print(table)


@app.command("trace")
def trace_event(
    event_id: str, destination: Annotated[str | None, typer.Option(help="Only here.")] = None
) -> None:
    """Where an event is: waiting, in flight, delivered (which call, which job) or dead (why)."""
    from dispatcher.trace import iso

    for found in Control().trace(event_id, destination):
        console.print(Text.assemble((found.destination, "bold"), f" {found.state}: ", found.detail))
        for key, value in found.facts.items():
            if key.endswith("_ms") and isinstance(value, int):
                value = "now" if key == "due_ms" and value == 0 else iso(value)  # 0: due now
            console.print(f"  {key}: {value}")
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
        raise ConfigurationError(nothing_configured())
    if online:
        from workers.probe import online as online_checks
        from workers.request import PlatformClient

        with PlatformClient() as http:
            found += online_checks(settings, client, http)
    marks = {"ok": ("ok   ", "green"), "warn": ("warn ", "yellow"), "error": ("error", "red")}
    for finding in found:
        console.print(Text.assemble(marks[finding.level], f" {finding.subject}: {finding.message}"))
    bad = sum(f.level == "error" for f in found)
    if bad:
        errors.print(f"{bad} problem(s) found", highlight=False)
        raise typer.Exit(1)
