"""One destination's stream, read through the consumer group: take, acknowledge, dead-letter.

An entry leaves its stream only when it is acknowledged (the platform took it) or moved
to the platform's dead-letter stream, each in one MULTI/EXEC transaction.
"""

from __future__ import annotations

import hashlib
import logging
from typing import cast

import redis

from dispatcher import keys
from dispatcher.settings import PlatformSettings

log = logging.getLogger(__name__)
Entry = tuple[bytes, dict[bytes, bytes]]


def batch_id_of(entries: list[Entry]) -> str:
    """A stable id for a batch: the same entries resent give the same id (letters, digits)."""
    return hashlib.sha256(b",".join(e[0] for e in entries)).hexdigest()[:24]


def entry_ms(entry_id: bytes) -> int:
    """The epoch ms a stream entry was added (the first half of its id)."""
    return int(entry_id.split(b"-", 1)[0])


def deadline_ms(table: PlatformSettings, entry: Entry) -> int:
    """When an entry's retry budget ends: the acceptance window or the retry age, first."""
    happened = int(entry[1][b"t"])
    return min(
        happened + int(table.acceptance_window_s * 1000),
        entry_ms(entry[0]) + int(table.max_retry_age_s * 1000),
    )


class DestinationStream:
    """The events waiting for one destination."""

    def __init__(self, client: redis.Redis, name: str, platform: str, consumer: str) -> None:
        self.redis, self.name, self.platform, self.consumer = client, name, platform, consumer
        self.key = keys.stream(name)

    def take(self, size: int, max_wait_s: float, now: int) -> tuple[list[Entry], int]:
        """Up to `size` entries: the pending ones if any (a retry, a dead worker's batch),
        else new ones once a full batch waits or the oldest waited `max_wait_s`. Returns
        the entries, or none and the milliseconds until the partial batch is due."""
        stream = self.key
        taken: list[Entry] = []
        cursor: bytes | str = "0-0"
        while len(taken) < size:
            reply = self.redis.xautoclaim(
                stream, keys.GROUP, self.consumer, 0, cursor, count=size - len(taken)
            )
            cursor, claimed = cast(tuple[bytes, list[Entry]], tuple(reply[:2]))
            taken += [e for e in claimed if e[1] is not None]
            if cursor in (b"0-0", "0-0"):
                break
        if taken:
            # A retried batch goes again exactly as it was, so its batch id stays the same
            # (Yandex's duplicate check after an unknown outcome depends on it).
            return taken, 0
        backlog = self.redis.xlen(stream)
        if backlog == 0:
            return [], 0
        if backlog < size:
            oldest = cast(list[Entry], self.redis.xrange(stream, "-", "+", count=1))
            waited_ms = now - entry_ms(oldest[0][0]) if oldest else 0
            max_wait_ms = int(max_wait_s * 1000)
            if waited_ms < max_wait_ms:
                return [], max_wait_ms - waited_ms
        fresh = self.redis.xreadgroup(keys.GROUP, self.consumer, {stream: ">"}, count=size)
        for _, entries in cast(list[tuple[bytes, list[Entry]]], fresh or []):
            taken += entries
        return taken, 0

    def ack(self, ids: list[bytes]) -> None:
        """The platform took these: forget them."""
        name = self.name
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(keys.stream(name), keys.GROUP, *ids)
        pipe.xdel(keys.stream(name), *ids)
        pipe.hdel(keys.attempts(name), *ids)
        pipe.hincrby(keys.state(name), "delivered", len(ids))
        pipe.execute()

    def dead_letter(
        self,
        rows: list[tuple[Entry, str]],
        status: int | None,
        body_excerpt: str,
        now: int,
        *,
        counted: bool = False,
    ) -> None:
        """Move entries, each with its reason, to the platform's dead-letter stream.

        `counted`: the attempt that ended them is already in their attempt count (a
        retry budget ran out) or there was none (expired unsent); otherwise the refusing
        attempt is added.
        """
        if not rows:
            return
        name = self.name
        ids = [entry[0] for entry, _ in rows]
        attempts = self.redis.hmget(keys.attempts(name), ids)
        pipe = self.redis.pipeline(transaction=True)
        for ((_entry_id, fields), reason), tries in zip(rows, attempts, strict=True):
            pipe.xadd(
                keys.deadletters(self.platform),
                {
                    "d": name,
                    "e": fields[b"e"],
                    "p": fields[b"p"],
                    "t": fields[b"t"],
                    "reason": reason,
                    "status": "" if status is None else status,
                    "excerpt": body_excerpt,
                    "attempts": int(tries or 0) + (0 if counted else 1),
                    "at": now,
                },
            )
        pipe.xack(keys.stream(name), keys.GROUP, *ids)
        pipe.xdel(keys.stream(name), *ids)
        pipe.hdel(keys.attempts(name), *ids)
        pipe.hincrby(keys.state(name), "dead", len(ids))
        pipe.execute()
        log.warning("destination %s: %d event(s) dead-lettered: %s", name, len(ids), rows[0][1])

    def count_failure(self, entries: list[Entry]) -> list[int]:
        """Add one failed attempt to each entry; returns their attempt counts."""
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            pipe.hincrby(keys.attempts(self.name), entry[0], 1)
        return [int(n) for n in pipe.execute()]
