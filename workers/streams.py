"""One destination's stream, read through the consumer group: what a drain takes next.

Entries leave the stream only in the settle script (workers/settle.lua).
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import redis

from dispatcher import keys
from dispatcher.settings import PlatformSettings

Entry = tuple[bytes, dict[bytes, bytes]]
IDLE_CONSUMER_MS = 3_600_000  # a consumer idle this long with nothing pending is gone


def batch_id_of(entries: list[Entry]) -> str:
    """A stable id for a batch: the same entries resent give the same id (letters, digits)."""
    return hashlib.sha256(b",".join(e[0] for e in entries)).hexdigest()[:24]


def entry_ms(entry_id: bytes) -> int:
    """The epoch ms a stream entry was added (the first half of its id)."""
    return int(entry_id.split(b"-", 1)[0])


def budget_ms(table: PlatformSettings) -> tuple[int, int]:
    """An entry's retry budget: the acceptance window (from when the event happened) and
    the retry age (from when it was stored)."""
    return int(table.acceptance_window_s * 1000), int(table.max_retry_age_s * 1000)


def deadline_ms(table: PlatformSettings, entry: Entry) -> int:
    """When an entry's retry budget ends: the acceptance window or the retry age, first."""
    window_ms, age_ms = budget_ms(table)
    return min(int(entry[1][b"t"]) + window_ms, entry_ms(entry[0]) + age_ms)


class DestinationStream:
    """The events waiting for one destination, as seen by one consumer (a worker process)."""

    def __init__(self, client: redis.Redis, name: str, consumer: str, lease_ms: int) -> None:
        self.redis, self.name, self.consumer, self.lease_ms = client, name, consumer, lease_ms
        self.key = keys.stream(name)

    def claim_pending(self, size: int) -> tuple[list[Entry], bool]:
        """Up to `size` pending entries idle for at least a lease (a retry, a dead holder's
        batch), and whether younger pending entries were left (a holder just gone)."""
        taken: list[Entry] = []
        cursor: bytes | str = "0-0"
        while len(taken) < size:
            reply = self.redis.xautoclaim(
                self.key, keys.GROUP, self.consumer, self.lease_ms, cursor, count=size - len(taken)
            )
            cursor, claimed = cast(tuple[bytes, list[Entry]], tuple(reply[:2]))
            taken += [e for e in claimed if e[1] is not None]
            if cursor in (b"0-0", "0-0"):
                break
        if taken:
            self._forget_idle_consumers()
            return taken, False
        pending = self.redis.xpending(self.key, keys.GROUP)
        return [], int(pending["pending"]) > 0

    def _forget_idle_consumers(self) -> None:
        """Remove consumers (dead workers) that hold nothing and were idle for an hour."""
        for consumer in self.redis.xinfo_consumers(self.key, keys.GROUP):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else name
            if (
                name != self.consumer
                and not consumer["pending"]
                and consumer["idle"] > IDLE_CONSUMER_MS
            ):
                self.redis.xgroup_delconsumer(self.key, keys.GROUP, name)

    def claim_ids(self, ids: list[bytes]) -> list[Entry]:
        """The entries `ids` that are still pending, claimed whatever their idle time (an
        unknown outcome's batch: its sender's lease ran out long ago)."""
        claimed = cast(
            list[Entry], self.redis.xclaim(self.key, keys.GROUP, self.consumer, 0, list[Any](ids))
        )
        return [e for e in claimed if e[1] is not None]

    def take_new(self, size: int, max_wait_s: float, now: int) -> list[Entry]:
        """Up to `size` entries never read yet: a full batch, or fewer once the oldest of
        them waited `max_wait_s`."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.key)
        pipe.xpending(self.key, keys.GROUP)
        pipe.xinfo_groups(self.key)
        length, pending, groups = pipe.execute()
        fresh = int(length) - int(pending["pending"])
        if fresh <= 0:
            return []
        if fresh < size:
            last = next(g["last-delivered-id"] for g in groups if g["name"] == keys.GROUP.encode())
            oldest = cast(list[Entry], self.redis.xrange(self.key, b"(" + last, "+", count=1))
            if oldest and now - entry_ms(oldest[0][0]) < int(max_wait_s * 1000):
                return []
        return self.read_new(size)

    def read_new(self, size: int) -> list[Entry]:
        """Up to `size` entries never read yet, whatever their age (the lease script has
        seen that they are due: workers/lease.lua)."""
        reply = self.redis.xreadgroup(keys.GROUP, self.consumer, {self.key: ">"}, count=size)
        taken: list[Entry] = []
        for _, entries in cast(list[tuple[bytes, list[Entry]]], reply or []):
            taken += entries
        return taken
