"""Rate limits kept in Redis and shared by every worker process on every host.

A request may count against several scopes at once (Yandex: the user's daily quota and
the host's per-second quota), so one Lua script takes a token from every bucket, or
from none. Scripts read Redis's own clock (`TIME`), so workers with skewed clocks share
one budget. A 429 blocks a scope for every worker until its retry time (`block_until`).
A platform that also caps calls in flight gets a counting semaphore (`InFlight`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import redis

from dispatcher import keys
from dispatcher.settings import PlatformSettings
from dispatcher.storage import run


@dataclass(frozen=True)
class Limit:
    """One scope's budget: `rate_per_min` calls per minute, `burst` back to back."""

    platform: str
    scope: str  # e.g. "token:<fingerprint>", "account:123", "ip"
    rate_per_min: float
    burst: int = 1


class Limiter:
    """All the budgets one request counts against."""

    def __init__(self, client: redis.Redis, limits: Sequence[Limit]) -> None:
        self.client = client
        self.limits = list(limits)
        self.keys = [
            key
            for limit in self.limits
            for key in (
                keys.bucket(limit.platform, limit.scope),
                keys.blocked(limit.platform, limit.scope),
            )
        ]
        self.args = [
            a for limit in self.limits for a in (repr(limit.rate_per_min / 60.0), limit.burst)
        ]

    def acquire(self) -> float:
        """Take one call from every scope; 0.0 if it may go now, else seconds to wait."""
        wait_ms = run(self.client, "workers", "limiter.lua", self.keys, *self.args)
        return int(wait_ms) / 1000.0

    def peek(self) -> float:
        """Seconds until a call could take its tokens (0.0: now); takes nothing."""
        wait_ms = run(self.client, "workers", "limiter.lua", self.keys, *self.args, "peek")
        return int(wait_ms) / 1000.0

    def block_until(self, until_ms: int, scopes: Sequence[str] | None = None) -> None:
        """Stop every worker calling for these scopes (default: all) until `until_ms`."""
        for limit in self.limits:
            if scopes is None or limit.scope.split(":", 1)[0] in scopes or limit.scope in scopes:
                key = keys.blocked(limit.platform, limit.scope)
                run(self.client, "workers", "block.lua", [key], until_ms)


class InFlight:
    """At most `limit` calls in flight for one scope, across all workers."""

    def __init__(
        self, client: redis.Redis, platform: str, scope: str, limit: int, hold_ms: int
    ) -> None:
        self.client, self.limit, self.hold_ms = client, limit, hold_ms
        self.key = keys.in_flight(platform, scope)

    def acquire(self, holder: str) -> bool:
        """Take a slot for `holder`; False when all are taken."""
        return bool(
            run(
                self.client, "workers", "semaphore.lua", [self.key],
                "acquire", self.limit, holder, self.hold_ms,
            )
        )  # fmt: skip

    def release(self, holder: str) -> None:
        """Give the slot back."""
        run(self.client, "workers", "semaphore.lua", [self.key], "release", self.limit, holder, 0)

    def free(self) -> bool:
        """Whether a slot is free now (none is taken)."""
        return bool(
            run(self.client, "workers", "semaphore.lua", [self.key], "peek", self.limit, "", 0)
        )


class _NoCap:
    """Stands in for `InFlight` where a platform has no concurrency cap."""

    def acquire(self, holder: str) -> bool:
        return True

    def release(self, holder: str) -> None:
        return None

    def free(self) -> bool:
        return True


def in_flight(
    client: redis.Redis, platform: str, limits: Sequence[Limit], table: PlatformSettings
) -> InFlight | _NoCap:
    """The concurrency cap of the first limit's scope, if the platform has one."""
    if table.max_in_flight is None:
        return _NoCap()
    hold_ms = int(table.timeout_s * 2000)  # a crashed holder frees its slot after this
    return InFlight(client, platform, limits[0].scope, table.max_in_flight, hold_ms)


def with_timeout(request: httpx.Request, table: PlatformSettings) -> httpx.Request:
    """Give a request its platform's own timeout (the client is shared by all platforms)."""
    request.extensions["timeout"] = httpx.Timeout(table.timeout_s).as_dict()
    return request
