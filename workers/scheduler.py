"""The scheduler: turns due destinations into drain tasks (docs/architecture.md).

Every worker process runs one scheduler thread for the platform queues it consumes, so
delivery needs no single scheduling process. Each tick is one Redis call for all of its
platforms (claim_due.lua), whatever the number of destinations; a destination that is
not due costs nothing. The same call keeps this worker's pool size in a per-platform
roll of live workers, so the claimed destinations are split into at least as many drain
tasks as there are pool slots to run them (`split`).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from celery import Celery, signals

from dispatcher import keys
from dispatcher.settings import PLATFORMS, Settings
from dispatcher.storage import LOST, open_store, reopen_store, run_all

log = logging.getLogger(__name__)
DRAIN_TASK = "convdispatch.drain"
TRACK_TASK = "convdispatch.track"
REDIS_DOWN_WAIT_S = 1.0
ALIVE_S = 10.0  # a worker whose scheduler has not looked for this long counts no more
PRESENCE_S = 1.0  # how often a scheduler renews its worker's place in the roll
IDLE_AFTER_S = 5.0  # looks finding nothing for this long: look every scheduler_idle_tick_s


def split(names: list[str], slots: int, max_size: int) -> list[list[str]]:
    """`names` as drain tasks: at least `min(len(names), slots)` of them, so every live
    pool slot gets work (8 due destinations and 2 worker processes: 2 tasks of 4, not 1
    of 8), and no fewer than keep each at most `max_size` (a task of many small drains
    runs them `drain_parallel` at a time, and costs one task message). Sizes differ by
    one at most."""
    if not names:
        return []
    n = max(min(len(names), max(1, slots)), math.ceil(len(names) / max_size))
    size, extra = divmod(len(names), n)
    tasks, at = [], 0
    for i in range(n):
        end = at + size + (1 if i < extra else 0)
        tasks.append(names[at:end])
        at = end
    return tasks


_worker: list[Any] = []  # the Celery WorkController of this process, once it starts


@signals.worker_init.connect
def _remember_worker(sender: Any = None, **_: Any) -> None:
    _worker[:] = [sender]


def pool_slots() -> int:
    """How many tasks this worker runs at once (its pool's concurrency); 1 if unknown."""
    concurrency = getattr(_worker[0], "concurrency", None) if _worker else None
    return concurrency if isinstance(concurrency, int) and concurrency > 0 else 1


class Scheduler:
    """Claims due destinations of `platforms` and sends them as drain tasks."""

    def __init__(
        self,
        app: Celery,
        settings: Settings,
        platforms: Sequence[str],
        client: redis.Redis,
        slots: int | None = None,
        name: str | None = None,
        reopen: Callable[[redis.Redis], redis.Redis] | None = None,
    ) -> None:
        self.app, self.settings, self.platforms = app, settings, list(platforms)
        self.redis = client
        self.reopen = reopen  # a new client in place of one that lost its connection
        self.slots = slots  # None: the running worker's pool size, read on every tick
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._member = ""
        self._present_at = -PRESENCE_S  # monotonic time of the last renewal in the roll
        self.more = False  # the last tick claimed a full `scheduler_batch` somewhere
        self.next_due_s = math.inf  # from the last tick: when the next thing is due
        self._idle_since: float | None = None  # monotonic start of looks finding nothing
        self.keys = [  # one claim call per shard (one on a single node), pipelined
            [
                k
                for p in self.platforms
                for k in (
                    keys.due(p, shard),
                    keys.open_jobs(p, shard),
                    keys.tracker(p, shard),
                    keys.schedulers(p, shard),
                )
            ]
            for shard in keys.shards()
        ]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The prefork pool forks children while this thread runs. A fork in the middle of a
        # tick would hand the child locks this thread held (imports, pools, logging) that
        # no thread of the child will ever release: forks wait for the tick to end.
        self._ticking = threading.Lock()
        os.register_at_fork(
            before=self._ticking.acquire,
            after_in_parent=self._ticking.release,
            after_in_child=self._ticking.release,
        )

    def tick(self) -> int:
        """Claim and send what is due now; returns how many destinations were sent."""
        s = self.settings
        claim_ms = int(s.dispatch_claim_s * 1000)
        member = f"{self.slots or pool_slots()}|{self.name}"
        old = self._member if self._member != member else ""
        if old or time.monotonic() - self._present_at >= PRESENCE_S:
            self._member, self._present_at = member, time.monotonic()
        else:
            member = ""  # in the roll already: an idle tick stays one small read
        args = (s.scheduler_batch, claim_ms, member, old, int(ALIVE_S * 1000))
        replies = run_all(self.redis, "workers", "claim_due.lua", [(k, args) for k in self.keys])
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed
        sent, self.more, self.next_due_s = 0, False, math.inf
        for i, platform in enumerate(self.platforms):
            queue = s.queue(platform)
            names: list[str] = []
            slots = 0
            for shard, reply in enumerate(replies):
                claimed, track, live, next_ms = cast(list[Any], reply)[i]
                if int(next_ms) >= 0:
                    self.next_due_s = min(self.next_due_s, int(next_ms) / 1000)
                names += [n.decode() for n in claimed]
                slots = max(slots, int(live))
                self.more |= len(claimed) >= s.scheduler_batch  # more may be due: look again
                if track:
                    self.app.send_task(
                        TRACK_TASK, args=[platform, shard], queue=queue,
                        expires=s.dispatch_claim_s,
                    )  # fmt: skip
            for group in split(names, slots, s.drain_group_size):
                self.app.send_task(
                    DRAIN_TASK, args=[group], queue=queue, expires=s.dispatch_claim_s
                )
                sent += len(group)
        return sent

    def run(self) -> None:
        """Tick until stopped; Redis or broker outages are waited out, never fatal."""
        while not self._stop.is_set():
            try:
                with self._ticking:
                    sent = self.tick()
            except Exception as exc:  # Redis restarting, broker away: try again shortly
                with self._ticking:
                    log.warning("scheduler: %s: %s", type(exc).__name__, exc)
                    if self.reopen is not None and isinstance(exc, LOST):
                        self._reopen()
                self._stop.wait(REDIS_DOWN_WAIT_S)
                continue
            wait_s = self.wait_s(sent, time.monotonic())
            if wait_s:
                self._stop.wait(wait_s)

    def wait_s(self, sent: int, now: float) -> float:
        """How long to wait before the next look, after one that sent `sent` destinations.

        At once after a full claim; else a tick: destinations coming due one by one then
        travel as one task per tick, not as a task each. After `IDLE_AFTER_S` of looks
        that found nothing, and nothing due within `lease_s` (a drain in progress keeps
        its destination due that soon), `scheduler_idle_tick_s`, but never past the next
        due time the last look saw nor past its platforms' `max_wait_s`: an idle worker
        looks a few times a second, not ten, and what it knows is coming is claimed on
        time; only work made due at once while all was idle (a full batch, a resume, a
        replay) may wait up to that long.
        """
        s = self.settings
        if sent or self.next_due_s <= s.lease_s:
            self._idle_since = None
            return 0.0 if sent and self.more else s.scheduler_tick_s
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since < IDLE_AFTER_S:
            return s.scheduler_tick_s
        # A partial batch enqueued meanwhile is due after its platform's `max_wait_s`.
        idle_s = min(s.scheduler_idle_tick_s, *(s.platform(p).max_wait_s for p in self.platforms))
        return max(s.scheduler_tick_s, min(idle_s, self.next_due_s))

    def _reopen(self) -> None:
        assert self.reopen is not None
        try:
            self.redis = self.reopen(self.redis)
        except (redis.RedisError, *LOST) as exc:  # no node answers yet: the next error retries
            log.warning("scheduler: no new Redis client yet: %s", exc)

    def start(self) -> None:
        """Run in a daemon thread."""
        slots = self.slots or pool_slots()
        log.info("scheduler for %s: %d pool slots here", ", ".join(self.platforms), slots)
        self._thread = threading.Thread(target=self.run, name="convdispatch-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def for_worker(app: Celery, settings: Settings, queues: Sequence[str]) -> Scheduler | None:
    """The scheduler of a worker consuming `queues`, or None if it consumes no platform."""
    by_queue = {settings.queue(p): p for p in PLATFORMS}
    platforms = [by_queue[q] for q in queues if q in by_queue]
    if not platforms:
        return None
    # Short timeouts: a fork of a pool child waits for a tick to end (see Scheduler).
    timeouts = {"socket_timeout": 5, "socket_connect_timeout": 2}
    client = open_store(settings, **timeouts)
    return Scheduler(
        app, settings, platforms, client,
        reopen=lambda old: reopen_store(settings, old, **timeouts),
    )  # fmt: skip
