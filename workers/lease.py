"""A destination's drain lease: exclusive, renewed by a heartbeat, fenced by its token.

Whoever holds the lease may take and settle the destination's entries; every settle step
checks the token first (settle.lua), so a holder that lost its lease changes nothing.
Taking the lease reads, in the same script, what a drain checks before its first read
(state, limiter, unknown outcomes, what waits in the stream). Releasing writes the
destination's next due time (and the drain's duration) in the same script, so an enqueue
that arrives while the lease is held is never left without a due time.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from dispatcher import keys
from dispatcher.settings import PlatformSettings, Settings
from dispatcher.storage import run, run_all
from workers.limiter import Limit, Limiter
from workers.metrics import DRAIN_BUCKETS, bucket_field

log = logging.getLogger(__name__)


@dataclass
class Start:
    """What taking the lease found: the state, the limiter's wait, and what to read first.

    `read`: "none" (not decided: a check must run first), "pending" (entries are pending:
    claim those first), "new" (never-read entries are due: read them) or "checked"
    (nothing is due to read).
    """

    now_ms: int
    state: dict[bytes, bytes]
    limiter_wait_s: float
    read: str = "none"


class Lease:
    """One drain's hold on one destination."""

    def __init__(self, client: redis.Redis, settings: Settings, name: str, platform: str) -> None:
        self.redis, self.settings, self.name = client, settings, name
        self.platform = platform
        self.token = uuid.uuid4().hex
        self.ms = int(settings.lease_s * 1000)
        due = keys.due(platform, keys.shard(name))
        self.keys = [keys.lease(name), due, keys.stream(name), keys.state(name)]
        self.lost = threading.Event()
        self.valid_until = 0.0  # monotonic: the lease is surely still ours before this
        self._held = False  # renewed by the heartbeat while True
        self._renewing = False  # a renewal is under way (see _Heartbeat.remove)

    def _op(self, op: str, extra_keys: Sequence[str], *extra: Any) -> Any:
        args = [op, self.token, self.ms, self.name, *extra]
        return run(self.redis, "workers", "lease.lua", [*self.keys, *extra_keys], *args)

    def start(
        self, table: PlatformSettings, limits: Sequence[Limit], read: bool = True
    ) -> Start | None:
        """Take the lease and start its heartbeat; None if another drain holds it.

        In the same call: the destination's state, the limiter's wait (as `Limiter.peek`)
        and, if `read` and nothing stops a send (pause, backoff, a wait over
        `max_limiter_wait_s`, a batch with an unknown outcome), what to read first.
        """
        limiter = Limiter(self.redis, limits)
        wait_limit = self.settings.max_limiter_wait_s
        scope_keys, scope_args, wait_s = limiter.keys, limiter.args, 0.0
        if keys.sharded():  # the scopes live in their own slot: peek at them apart
            scope_keys, scope_args = [], []
            wait_s = limiter.peek() if limits else 0.0
            read = read and wait_s <= wait_limit
        # The first renewal is timed from the call, not from its reply: the lease runs
        # from the moment Redis granted it, however long a busy process takes to go on.
        sent_at = time.monotonic()
        reply = self._op(
            "acquire",
            [keys.sending(self.name), *scope_keys],
            int(read), keys.GROUP, table.batch_size, int(table.max_wait_s * 1000),
            int(wait_limit * 1000), *scope_args,
        )  # fmt: skip
        if not int(reply[0]):
            return None
        self.valid_until = sent_at + self.ms / 1000
        self._held = True
        _heartbeat().add(self, sent_at)
        raw_state = cast(list[bytes], reply[2])
        state = dict(zip(raw_state[::2], raw_state[1::2], strict=True))
        read_first = reply[4].decode() if isinstance(reply[4], bytes) else str(reply[4])
        return Start(int(reply[1]), state, max(wait_s, int(reply[3]) / 1000), read_first)

    def renew(self) -> bool:
        """Extend the lease by `lease_s`, or take it again if it ran out and no other drain
        has taken it since; False (and `lost` set) if another drain has it."""
        sent_at = time.monotonic()
        if int(self._op("renew", [])):
            self.valid_until = sent_at + self.ms / 1000
            return True
        log.error("destination %s: lease lost; this drain settles nothing more", self.name)
        self.lost.set()
        return False

    def held(self) -> bool:
        """Whether this drain may still send: surely, while the last grant has a third of
        the lease left (the heartbeat renews every third); past that (a process kept from
        the CPU, a stalled heartbeat) Redis is asked, so a drain whose lease was taken over
        sends nothing more."""
        if self.lost.is_set():
            return False
        if time.monotonic() < self.valid_until - self.ms / 3000:
            return True
        return self.renew()

    def release(
        self, table: PlatformSettings, not_before_ms: int = 0, drain_s: float | None = None
    ) -> int:
        """Stop the heartbeat, give the lease back and write the next due time; with
        `drain_s`, count the drain's duration in the platform's drain histogram (even if
        another drain has taken the lease over: -1 then)."""
        _heartbeat().remove(self)
        self._held = False
        recheck_ms = int(self.settings.pause_recheck_s * 1000)
        max_wait_ms = int(table.max_wait_s * 1000)
        seconds = "" if drain_s is None else repr(drain_s)
        bucket = "" if drain_s is None else bucket_field(DRAIN_BUCKETS, drain_s)
        return int(
            self._op(
                "release", [keys.drain_latency(self.platform, keys.shard(self.name))],
                table.batch_size, max_wait_ms, not_before_ms, recheck_ms, seconds, bucket,
            )
        )  # fmt: skip


class _Heartbeat:
    """One thread per process renews every lease the process holds, `lease_s / 3` apart.

    The leases due for renewal (or due within half an interval) are renewed together, in
    one pipelined round trip per Redis client: a process busy with many drains (threads
    that hold the GIL for tens of ms each) gets the thread scheduled a few times per beat,
    not a few times per lease, so renewals do not queue up behind each other.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Lease]] = []  # (renew at, tiebreak, lease) heap
        self._cond = threading.Condition()
        self._count = 0
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease, taken_at: float) -> None:
        """Renew `lease`, taken at `taken_at` (monotonic), from `lease_s / 3` after that."""
        with self._cond:
            self._push(lease, taken_at + lease.ms / 3000)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="convdispatch-lease-heartbeat", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def remove(self, lease: Lease) -> None:
        """After this returns, `lease` is renewed no more (a renewal under way has ended)."""
        with self._cond:
            lease._held = False
            self._due = [d for d in self._due if d[2] is not lease]
            heapq.heapify(self._due)
            while lease._renewing:
                self._cond.wait()

    def _push(self, lease: Lease, at: float) -> None:
        self._count += 1
        heapq.heappush(self._due, (at, self._count, lease))

    def _take_due(self) -> tuple[float, list[Lease]]:
        """Wait for the first renewal time; then every lease due within half an interval."""
        with self._cond:
            while not self._due or self._due[0][0] > time.monotonic():
                self._cond.wait(None if not self._due else self._due[0][0] - time.monotonic())
            now = time.monotonic()
            leases = []
            while self._due and self._due[0][0] <= now + self._due[0][2].ms / 6000:
                lease = heapq.heappop(self._due)[2]
                lease._renewing = True
                leases.append(lease)
            return now, leases

    def _run(self) -> None:
        while True:
            began, leases = self._take_due()
            kept = _renew_all(leases)
            with self._cond:
                for lease, keep in zip(leases, kept, strict=True):
                    lease._renewing = False
                    if keep and lease._held:  # the next beat keeps its cadence from this one
                        self._push(lease, began + lease.ms / 3000)
                self._cond.notify_all()


def _renew_all(leases: list[Lease]) -> list[bool]:
    """Renew `leases`, one pipeline per client; False for each lease found lost."""
    kept = dict.fromkeys(range(len(leases)), True)
    by_client: dict[int, list[int]] = {}
    for i, lease in enumerate(leases):
        by_client.setdefault(id(lease.redis), []).append(i)
    for members in by_client.values():
        calls = [
            (leases[i].keys, ("renew", leases[i].token, leases[i].ms, leases[i].name))
            for i in members
        ]
        sent_at = time.monotonic()
        try:
            replies = run_all(leases[members[0]].redis, "workers", "lease.lua", calls)
        except redis.RedisError as exc:  # Redis away: the leases may run out; settle checks
            log.warning("lease renewal failed for %d destinations: %s", len(members), exc)
            continue
        for i, reply in zip(members, replies, strict=True):
            lease = leases[i]
            if isinstance(reply, Exception):
                log.warning("destination %s: lease renewal failed: %s", lease.name, reply)
            elif int(reply) == 2:
                log.warning(
                    "destination %s: the lease ran out while this process was kept from the "
                    "CPU; no other drain had taken it, so this one goes on",
                    lease.name,
                )
            elif not int(reply):
                log.error("destination %s: lease lost; this drain settles nothing more", lease.name)
                lease.lost.set()
                kept[i] = False
            if not isinstance(reply, Exception) and int(reply):
                lease.valid_until = sent_at + lease.ms / 1000
    return [kept[i] for i in range(len(leases))]


_beat: list[_Heartbeat] = []
_beat_lock = threading.Lock()


def _heartbeat() -> _Heartbeat:
    """This process's heartbeat, started with its first lease."""
    if not _beat:
        with _beat_lock:
            if not _beat:
                _beat.append(_Heartbeat())
    return _beat[0]


def _after_fork_in_child() -> None:
    # Threads do not survive a fork: a child (a prefork pool process) starts its own.
    global _beat_lock
    _beat.clear()
    _beat_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
