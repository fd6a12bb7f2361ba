"""A token bucket per rate-limit scope, kept in Redis and shared by every worker process.

The bucket lives in one Lua script that reads Redis's own clock (`TIME`), so workers on
hosts with skewed clocks still share one budget. A 429 blocks the whole scope for
every worker until its retry time (`block_until`).
"""

from __future__ import annotations

import redis

from dispatcher import keys
from dispatcher.storage import lua


class TokenBucket:
    """The calls one scope (an access token, an ad account, a user) may make."""

    def __init__(
        self, client: redis.Redis, platform: str, scope: str, rate_per_min: float, burst: int
    ) -> None:
        self.client = client
        self.keys = [keys.bucket(platform, scope), keys.blocked(platform, scope)]
        self.rate_per_s = rate_per_min / 60.0
        self.burst = burst

    def acquire(self) -> float:
        """Take one call; returns 0.0 if it may go now, else seconds to wait and ask again."""
        wait_ms = self.client.eval(
            lua("workers", "limiter.lua"), 2, *self.keys, repr(self.rate_per_s), self.burst
        )
        return int(wait_ms) / 1000.0

    def block_until(self, until_ms: int) -> None:
        """Stop every worker from calling for this scope until `until_ms` (epoch ms)."""
        self.client.eval(lua("workers", "block.lua"), 1, self.keys[1], until_ms)
