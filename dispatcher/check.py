"""`convdispatch check`, offline part: credentials present, routes resolvable, Redis durable.

Loading `Settings` already validates the configuration itself (a bad file never gets
here). These checks find what only shows at delivery time: a token's environment
variable unset, a LinkedIn rule name `ensure` never stored, a Redis that would lose or
evict events. Workers run `credential_findings` at start and pause a destination that
cannot be served, with the reason, instead of failing every batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, cast

import redis

from dispatcher import keys
from dispatcher.errors import ConfigurationError
from dispatcher.registry import Registry
from dispatcher.settings import Destination, Settings, config_file
from dispatcher.storage import clustered

Level = Literal["ok", "warn", "error"]


@dataclass(frozen=True)
class Finding:
    """One check's result."""

    level: Level
    subject: str  # "redis", "destination li-main", "route 2"...
    message: str


def credentials(destination: Destination) -> str | None:
    """Why `destination` has no usable credentials here, or None when it has them."""
    try:
        if destination.oauth is not None:
            destination.oauth.read()
        else:
            destination.static_token()
    except ConfigurationError as exc:
        return f"configuration: {exc}"
    return None


def credential_findings(settings: Settings, platforms: list[str] | None = None) -> list[Finding]:
    """One finding per destination (of `platforms`, default all): are its credentials set?"""
    found = []
    for name, dest in sorted(settings.destinations.items()):
        if platforms is not None and dest.platform not in platforms:
            continue
        problem = credentials(dest)
        subject = f"destination {name}"
        if problem is None:
            found.append(Finding("ok", subject, f"{dest.platform}: credentials set"))
        else:
            found.append(Finding("error", subject, problem))
    return found


def route_findings(settings: Settings, client: redis.Redis) -> list[Finding]:
    """Routes naming a LinkedIn rule by name: does Redis know its URN yet?"""
    found = []
    for i, route in enumerate(settings.routes):
        if route.rule is None or route.conversion is not None:
            continue
        urn = cast(bytes | None, client.hget(keys.rule_names(route.destination), route.rule))
        subject = f"route {i} ({route.event} -> {route.destination})"
        if urn is None:
            message = (
                f"LinkedIn rule {route.rule!r} is not known: run "
                f"`convdispatch linkedin ensure {route.destination}`; events are skipped until then"
            )
            found.append(Finding("error", subject, message))
        else:
            found.append(Finding("ok", subject, f"rule {route.rule!r} is {urn.decode()}"))
    return found


def redis_findings(client: redis.Redis) -> list[Finding]:
    """Reachable, and set up to keep events: AOF on, `maxmemory` set, `noeviction` (on
    every primary of a cluster)."""
    try:
        client.ping()
    except redis.RedisError as exc:
        return [Finding("error", "redis", f"unreachable: {type(exc).__name__}: {exc}")]
    if not clustered(client):
        return _node_findings("redis", lambda: client.config_get("*"))
    found = []
    for node in cast(Any, client).get_primaries():
        read = partial(client.config_get, "*", target_nodes=node)
        found += _node_findings(f"redis {node.name}", read)
    return found


def _node_findings(subject: str, read_config: Callable[[], object]) -> list[Finding]:
    try:
        config = cast(dict[str, str], read_config())
    except redis.ResponseError:  # managed services often disable CONFIG
        return [Finding("warn", subject, "CONFIG GET is refused: check AOF and maxmemory by hand")]
    found = [Finding("ok", subject, "reachable")]
    if config.get("appendonly") != "yes":
        found.append(
            Finding("error", subject, "appendonly is off: a restart loses every waiting event")
        )
    else:
        fsync = config.get("appendfsync", "?")
        found.append(Finding("ok", subject, f"AOF on (appendfsync {fsync})"))
    if int(config.get("maxmemory", "0") or 0) == 0:
        found.append(
            Finding("warn", subject, "maxmemory is 0: a full host fails instead of refusing")
        )
    policy = config.get("maxmemory-policy", "?")
    if policy != "noeviction":
        found.append(
            Finding("error", subject, f"maxmemory-policy {policy}: Redis may evict events")
        )
    return found


def offline(settings: Settings, client: redis.Redis) -> list[Finding]:
    """Every offline check, of the configuration's destinations and routes and, once
    Redis answers, of those registered at runtime (`settings` is brought up to date)."""
    redis_part = redis_findings(client)
    reachable = not any(f.level == "error" and "unreachable" in f.message for f in redis_part)
    registry = Registry(settings, client)
    if reachable:
        registry.sync(force=True)
    path = config_file()
    where = f"read from {path.resolve()}" if path else "no file: defaults and CONVDISP_* only"
    found = [Finding("ok", "config", f"{where}; {len(settings.destinations)} destination(s)")]
    found += credential_findings(settings)
    if reachable:
        found += [
            Finding("error", name, f"registered, but skipped: {why}")
            for name, why in sorted(registry.skipped.items())
        ]
    found += redis_part
    if reachable:
        found += route_findings(settings, client)
    return found
