"""LinkedIn conversion rules that routes name: their URNs as `convdispatch linkedin ensure`
stored them, cached by each producer."""

from __future__ import annotations

import time
from typing import cast

import redis
import redis.asyncio

from dispatcher import keys
from dispatcher.destination import Route
from dispatcher.storage import translate_redis_errors

RULE_NAMES_TTL_S = 60.0  # how long a producer trusts the rule names it read
RULE_MISS_TTL_S = 5.0  # how soon an unknown rule name is looked up again


class RuleNames:
    """Rule URNs by destination and name, re-read from Redis at most every
    `RULE_NAMES_TTL_S` (sooner after a miss)."""

    def __init__(self) -> None:
        self._names: dict[str, tuple[float, dict[str, str]]] = {}

    def urn(self, client: redis.Redis, destination: str, name: str) -> str | None:
        """The URN of `destination`'s rule `name`, or None while `ensure` has not stored it."""
        if self._stale(destination, name):
            with translate_redis_errors():
                raw = client.hgetall(keys.rule_names(destination))
            self._keep(destination, cast(dict[bytes, bytes], raw))
        return self._names[destination][1].get(name)

    async def arefresh(self, client: redis.asyncio.Redis, routes: list[Route], event: str) -> None:
        """Refresh, on an event loop's client, the names the routes of `event` need, so
        that a fan-out on that loop finds them cached and never blocks it on Redis."""
        for route in routes:
            wanted = route.event == event and route.conversion is None
            if wanted and route.rule and self._stale(route.destination, route.rule):
                with translate_redis_errors():
                    raw = await client.hgetall(keys.rule_names(route.destination))
                self._keep(route.destination, cast(dict[bytes, bytes], raw))

    def clear(self) -> None:
        """Forget every name: the next look-up reads Redis."""
        self._names.clear()

    def _stale(self, destination: str, name: str) -> bool:
        loaded_at, names = self._names.get(destination, (-1e9, {}))
        ttl = RULE_NAMES_TTL_S if name in names else RULE_MISS_TTL_S
        return time.monotonic() - loaded_at > ttl

    def _keep(self, destination: str, raw: dict[bytes, bytes]) -> None:
        names = {k.decode(): v.decode() for k, v in raw.items()}
        self._names[destination] = (time.monotonic(), names)
