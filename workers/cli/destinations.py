"""`convdispatch destinations`: destinations and routes registered at runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from dispatcher import ConfigurationError, Control

if TYPE_CHECKING:
    from dispatcher.registry import Registry
from workers.cli.common import console

registry_cli = typer.Typer(
    help="Destinations and routes registered at runtime (no restart).", no_args_is_help=True
)


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
