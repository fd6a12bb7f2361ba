"""Operator controls: see a destination's state, pause it, resume it."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from dispatcher import keys
from dispatcher.client import Dispatcher
from dispatcher.deadletters import known_platform
from dispatcher.destination import destination_id
from dispatcher.errors import ConfigurationError
from dispatcher.identity import masked
from dispatcher.registry import Backlog
from dispatcher.settings import PLATFORMS, Destination
from dispatcher.storage import run, translate_redis_errors
from dispatcher.trace import Trace, trace


@dataclass(frozen=True)
class DestinationStatus:
    """What an operator needs to know about one destination."""

    destination: str
    platform: str
    backlog: int  # undelivered events, in flight included
    in_flight: int  # taken by a drain and not yet acknowledged
    paused: bool
    pause_reason: str
    next_attempt_at_ms: int
    last_error: str
    delivered: int
    dead: int
    oldest_ms: int = 0  # when the oldest waiting event was stored (0: none waits)
    failures: int = 0  # consecutive failed calls
    refresh_token_expires_at: float = 0.0  # OAuth: when the refresh token ends (0: unknown)


def grant_record(destination: Destination) -> str | None:
    """The Redis record of an OAuth destination's grant (`keys.oauth`), or None: no OAuth,
    or its credentials' variables are not set in this process."""
    if destination.oauth is None or (fingerprint := destination.fingerprint()) == "unset":
        return None
    return keys.oauth(destination.platform, fingerprint)


@dataclass(frozen=True)
class Orphan:
    """A stream whose destination is no longer configured: its events wait, unsent."""

    destination: str
    platform: str  # as recorded when the stream was created; "" if unknown
    backlog: int


ORPHAN_REASON = (
    "orphaned: destination {name!r} was removed (from the configuration or the registry)"
)


class Control:
    """Pause, resume and inspect destinations."""

    def __init__(self, dispatcher: Dispatcher | None = None) -> None:
        self.dispatcher = dispatcher or Dispatcher()

    def _destination(self, name: str) -> Destination:
        """`name`'s destination: configured, or registered at runtime (`Registry`)."""
        with translate_redis_errors():
            return self.dispatcher.registry.destination(destination_id(name))

    def _destinations(self) -> dict[str, Destination]:
        """Every destination, the registry's included."""
        with translate_redis_errors():
            self.dispatcher.registry.sync()
        return self.dispatcher.settings.destinations

    def status(self, destination: str) -> DestinationStatus:
        """The state of one destination."""
        return self.statuses([destination])[0]

    def statuses(self, destinations: list[str]) -> list[DestinationStatus]:
        """The state of many destinations, read in one pipelined round trip."""
        if isinstance(destinations, str):
            raise ConfigurationError("destinations must be a list of destination ids")
        found = [self._destination(name) for name in destinations]
        records = [grant_record(dest) for dest in found]
        with translate_redis_errors():
            pipe = self.dispatcher.redis.pipeline(transaction=False)
            for name in destinations:
                pipe.xlen(keys.stream(name))
                pipe.hgetall(keys.state(name))
                pipe.xrange(keys.stream(name), "-", "+", 1)
                pipe.xinfo_groups(keys.stream(name))
            for grant in filter(None, records):
                pipe.hget(grant, keys.OAUTH_REFRESH_EXPIRES_AT)
            replies = pipe.execute(raise_on_error=False)
            # an error reply of a command that must work (not XINFO of a stream not made yet)
            for i, reply in enumerate(replies):
                xinfo = i < 4 * len(destinations) and i % 4 == 3
                if isinstance(reply, redis.RedisError) and not xinfo:
                    raise reply
        expiries = iter(replies[4 * len(destinations) :])
        out = []
        for i, (name, dest, record) in enumerate(zip(destinations, found, records, strict=True)):
            backlog, state, first, groups = replies[4 * i : 4 * i + 4]
            expires = next(expiries) if record else None
            text = {k.decode(): v.decode() for k, v in state.items()}
            pending = 0 if isinstance(groups, Exception) else sum(
                int(g["pending"]) for g in groups if g["name"] in (keys.GROUP, keys.GROUP.encode())
            )  # fmt: skip
            out.append(DestinationStatus(
                destination=name, platform=dest.platform, backlog=int(backlog), in_flight=pending,
                paused=bool(text.get("paused")), pause_reason=text.get("pause_reason", ""),
                next_attempt_at_ms=int(text.get("next_at_ms", 0)),
                last_error=text.get("last_error", ""), delivered=int(text.get("delivered", 0)),
                dead=int(text.get("dead", 0)),
                oldest_ms=int(first[0][0].split(b"-")[0]) if first else 0,
                failures=int(text.get("failures", 0)),
                refresh_token_expires_at=float(expires) if isinstance(expires, bytes) else 0.0,
            ))  # fmt: skip
        return out

    def pause(self, destination: str, reason: str = "paused by operator") -> None:
        """Stop delivering to `destination`; events keep waiting in Redis. An empty `reason`
        is a `ConfigurationError`: the pause must say why to whoever finds it."""
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigurationError("a pause needs a reason (--reason): it is shown in status")
        fingerprint = self._destination(destination).fingerprint()
        with translate_redis_errors():
            self.dispatcher.redis.hset(
                keys.state(destination),
                mapping={"paused": 1, "paused_fp": fingerprint, "pause_reason": reason},
            )

    def trace(self, event_id: str, destination: str | None = None) -> list[Trace]:
        """Where the event is at `destination` (or every destination that stored it)."""
        if not isinstance(event_id, str):
            raise ConfigurationError("event_id must be an event id (text)")
        if destination is not None:
            self._destination(destination)
        self._destinations()  # the registry's too, for an event of any destination
        with translate_redis_errors():
            return trace(self.dispatcher.redis, self.dispatcher.settings, event_id, destination)

    def pause_unservable(self, destination: str, reason: str) -> None:
        """Pause a destination whose credentials are missing here; a worker that later finds
        them (a restart with the variable set) resumes it by itself."""
        with translate_redis_errors():
            self.dispatcher.redis.hset(
                keys.state(destination),
                mapping={"paused": 1, "paused_fp": "unset", "pause_reason": reason},
            )

    def resume(self, destination: str) -> None:
        """Deliver again (after a pause by an operator or by a 401/403) and drain at once."""
        platform = self._destination(destination).platform
        with translate_redis_errors():
            pipe = self.dispatcher.redis.pipeline(transaction=True)
            pipe.hdel(keys.state(destination), "paused", "paused_fp", "pause_reason", "next_at_ms")
            pipe.zadd(keys.due(platform, keys.shard(destination)), {destination: 0})  # due now
            pipe.execute()

    def orphans(self) -> list[Orphan]:
        """Streams with events whose destination is no longer configured (a SCAN)."""
        r = self.dispatcher.redis
        configured = self._destinations()
        found = []
        with translate_redis_errors():
            for key in r.scan_iter(match=keys.streams_pattern(), count=1000):
                name = keys.destination_of(key.decode())
                if name in configured:
                    continue
                backlog = int(r.xlen(key))
                platform = r.hget(keys.state(name), "platform")
                if backlog:
                    found.append(Orphan(name, _text(platform), backlog))
        return sorted(found, key=lambda o: o.destination)

    def remove_destination(self, name: str, backlog: Backlog) -> int:
        """Remove a destination registered at runtime; what waits for it is drained first
        (`drain`: new events are refused and the entry goes once the backlog is
        delivered), dead-lettered (`dead-letter`, replayable), or kept in Redis as an
        orphan (`keep`). Returns the backlog.

        Raises:
            ConfigurationError: `name` comes from the configuration, not the registry.
        """
        registry = self.dispatcher.registry
        if backlog == "dead-letter" and destination_id(name) in registry.declared:
            raise ConfigurationError(  # checked before the registry entry goes
                f"destination {masked(name)!r} is in the configuration: its events stay "
                "(keep removes only its registry entry; edit the configuration to remove it)"
            )
        platform = registry.platform_of(name)
        waiting = registry.remove(name, "keep" if backlog == "dead-letter" else backlog)
        if backlog == "dead-letter" and waiting:
            self.dead_letter_orphan(name, platform)
        return waiting

    def dead_letter_orphan(self, destination: str, platform: str = "") -> int:
        """Move every event of an orphaned stream to its platform's dead letters.

        Raises:
            ConfigurationError: `destination` is still configured; its stream records a
                platform other than `platform`; `platform` is not one; or neither names one.
        """
        shown = masked(destination_id(destination))
        if destination in self._destinations():
            raise ConfigurationError(f"destination {shown!r} is configured: not an orphan")
        r = self.dispatcher.redis
        with translate_redis_errors():
            recorded = _text(r.hget(keys.state(destination), "platform"))
            if platform:
                known_platform(platform)
            if platform and recorded and platform != recorded:
                raise ConfigurationError(
                    f"the stream of {shown!r} records platform {recorded!r}, not {platform!r}"
                )
            if not r.exists(keys.stream(destination)):
                raise ConfigurationError(f"no stream of {shown!r}: nothing to dead-letter")
            platform = platform or recorded
            if platform not in PLATFORMS:
                raise ConfigurationError(f"name the platform of {shown!r} (--platform)")
            moved, total = 1, 0
            while moved:
                moved = int(
                    run(
                        r, "dispatcher", "orphans.lua",
                        [keys.stream(destination), keys.state(destination),
                         keys.attempts(destination),
                         keys.deadletters(platform, keys.shard(destination))],
                        keys.GROUP, destination, ORPHAN_REASON.format(name=destination), 1000,
                    )
                )  # fmt: skip
                total += moved
            r.zrem(keys.due(platform, keys.shard(destination)), destination)
            r.srem(keys.orphans(), destination)
        return total


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
