"""Writing validated events to Redis: one script call per destination and chunk, pipelined.

Each call appends at most `CHUNK_EVENTS` events of one destination, all or none, so no
call holds Redis for long and every script touches one destination (one Cluster slot).
Payloads are stored packed (`dispatcher.compact`). Before writing, the memory guard
refuses once Redis is past `memory_high_watermark` of its `maxmemory`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
import redis.asyncio

from dispatcher import keys
from dispatcher.compact import pack_all
from dispatcher.errors import BackpressureError, StorageError
from dispatcher.settings import Settings
from dispatcher.storage import (
    LOST,
    Call,
    amemory,
    arun_all,
    memory,
    run_all,
    translate_redis_errors,
)

ENQUEUE = ("dispatcher", "enqueue.lua")
ENQUEUE_KEYS = 5  # stream, state, lease, due index, ids: the arguments that follow are ARGV
CHUNK_EVENTS = 5_000  # events per script call (~10-20 ms inside Redis)
MEMORY_CHECK_S = 1.0  # how long a reading of Redis's INFO memory is trusted
BYTES_PER_ENTRY = 200  # a stream entry's overhead beyond its payload, for the estimate
Rows = list[tuple[str, bytes, int]]  # event id, payload, happened at (ms)
Refused = dict[str, BackpressureError]  # destination -> why none of its events was stored


class Writer:
    """Turns {destination: rows} into script calls and their outcome (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._checked_s = 0.0
        self._used = self._limit = 0
        self.lost = False  # a write met a connection error: the client may need replacing

    def calls(self, groups: Mapping[str, Rows], dedup: bool) -> list[tuple[str, list[Any]]]:
        """(destination, keys + args) of every script call, a chunk of one destination each."""
        out = []
        for name, rows in groups.items():
            for i in range(0, len(rows), CHUNK_EVENTS):
                out.append((name, self._call(name, rows[i : i + CHUNK_EVENTS], dedup)))
        return out

    def _call(self, name: str, rows: Rows, dedup: bool) -> list[Any]:
        platform = self.settings.destination(name).platform
        table = self.settings.platform(platform)
        window_ms = int(self.settings.idempotency_window_s * 1000)
        window_ms = window_ms if dedup else -window_ms  # a replay: stored, its id recorded
        due = keys.due(platform, keys.shard(name))
        args: list[Any] = [
            keys.stream(name), keys.state(name), keys.lease(name), due, keys.event_ids(name),
            keys.GROUP, name, platform, table.max_backlog,
            table.batch_size, int(table.max_wait_s * 1000), window_ms, len(rows),
        ]  # fmt: skip
        packed = pack_all(platform, [payload for _, payload, _ in rows])
        for (event_id, _, at_ms), payload in zip(rows, packed, strict=True):
            # Bytes pass through redis-py's encoder untouched: this loop is the hot path.
            args += [payload, event_id.encode(), b"%d" % at_ms]
        return args

    def write(self, client: redis.Redis, groups: Mapping[str, Rows], dedup: bool = True) -> Refused:
        """Store `groups`; the destinations refused for their backlog cap, with why."""
        if not groups:
            return {}
        with translate_redis_errors(), self._noting_lost():
            if self._stale():
                self._seen(*memory(client))
            self._admit(groups)
            calls = self.calls(groups, dedup)
            return _outcome(calls, run_all(client, *ENQUEUE, [_split(a) for _, a in calls]))

    async def awrite(
        self, client: redis.asyncio.Redis, groups: Mapping[str, Rows], dedup: bool = True
    ) -> Refused:
        """The asyncio twin of `write`."""
        if not groups:
            return {}
        with translate_redis_errors(), self._noting_lost():
            if self._stale():
                self._seen(*await amemory(client))
            self._admit(groups)
            calls = self.calls(groups, dedup)
            replies = await arun_all(client, *ENQUEUE, [_split(a) for _, a in calls])
            return _outcome(calls, replies)

    @contextmanager
    def _noting_lost(self) -> Iterator[None]:
        try:
            yield
        except LOST:
            self.lost = True
            raise

    # -- the memory guard: refuse before Redis itself refuses writes ---------------------

    def _stale(self) -> bool:
        return time.monotonic() - self._checked_s > MEMORY_CHECK_S

    def _seen(self, used: int, limit: int) -> None:
        with self._lock:
            self._used, self._limit = used, limit
            self._checked_s = time.monotonic()

    def _admit(self, groups: Mapping[str, Rows]) -> None:
        """Refuse past the watermark; between readings, count what this producer adds."""
        watermark = self.settings.memory_high_watermark
        with self._lock:
            if not self._limit:
                return
            if self._used >= self._limit * watermark:
                raise BackpressureError.memory(watermark)
            for rows in groups.values():
                self._used += sum(len(p) for _, p, _ in rows) + BYTES_PER_ENTRY * len(rows)


def _split(args: list[Any]) -> Call:
    return args[:ENQUEUE_KEYS], args[ENQUEUE_KEYS:]


def _outcome(calls: list[tuple[str, list[Any]]], replies: list[Any]) -> Refused:
    refused: Refused = {}
    for (name, _), reply in zip(calls, replies, strict=True):
        if not isinstance(reply, Exception):
            continue
        text = str(reply)
        if isinstance(reply, redis.exceptions.OutOfMemoryError) or "OOM" in text:
            raise BackpressureError.memory(1.0)
        words = text.split()
        if words[:1] != ["BACKPRESSURE"]:
            raise StorageError(f"redis: {type(reply).__name__}: {reply}")
        refused.setdefault(name, BackpressureError(name, int(words[1]), int(words[2])))
    return refused
