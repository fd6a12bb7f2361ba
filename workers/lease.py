"""A destination's drain lease: exclusive, renewed by a heartbeat, fenced by its token.

Whoever holds the lease may take and settle the destination's entries; every settle step
checks the token first (settle.lua), so a holder that lost its lease changes nothing.
Releasing writes the destination's next due time in the same script, so an enqueue that
arrives while the lease is held is never left without a due time.
"""

from __future__ import annotations

import logging
import threading
import uuid

import redis

from dispatcher import keys
from dispatcher.settings import PlatformSettings, Settings
from dispatcher.storage import lua

log = logging.getLogger(__name__)


class Lease:
    """One drain's hold on one destination."""

    def __init__(self, client: redis.Redis, settings: Settings, name: str, platform: str) -> None:
        self.redis, self.settings, self.name = client, settings, name
        self.token = uuid.uuid4().hex
        self.ms = int(settings.lease_s * 1000)
        self.keys = [keys.lease(name), keys.due(platform), keys.stream(name), keys.state(name)]
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _op(self, op: str, *extra: int) -> int:
        script = lua("workers", "lease.lua")
        return int(
            self.redis.eval(script, 4, *self.keys, op, self.token, self.ms, self.name, *extra)
        )

    def acquire(self) -> bool:
        """Take the lease and start the heartbeat; False if another drain holds it."""
        if not self._op("acquire"):
            return False
        self._beat = threading.Thread(
            target=self._heartbeat, name=f"lease-{self.name}", daemon=True
        )
        self._beat.start()
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ms / 3000):
            try:
                if not self._op("renew"):
                    log.error(
                        "destination %s: lease lost; this drain settles nothing more", self.name
                    )
                    self.lost.set()
                    return
            except redis.RedisError as exc:  # Redis away: the lease may run out; settle checks
                log.warning("destination %s: lease renewal failed: %s", self.name, exc)

    def release(self, table: PlatformSettings, not_before_ms: int = 0) -> int:
        """Stop the heartbeat, give the lease back and write the next due time."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        recheck_ms = int(self.settings.pause_recheck_s * 1000)
        max_wait_ms = int(table.max_wait_s * 1000)
        return self._op("release", table.batch_size, max_wait_ms, not_before_ms, recheck_ms)
