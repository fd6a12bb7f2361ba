"""The scheduler: turns due destinations into drain tasks (docs/architecture.md).

Every worker process runs one scheduler thread for the platform queues it consumes, so
delivery needs no single scheduling process. Each tick is one Redis call for all of its
platforms (claim_due.lua), whatever the number of destinations; a destination that is
not due costs nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, cast

import redis
from celery import Celery

from dispatcher import keys
from dispatcher.settings import PLATFORMS, Settings
from dispatcher.storage import lua

log = logging.getLogger(__name__)
DRAIN_TASK = "convdispatch.drain"
TRACK_TASK = "convdispatch.track"
REDIS_DOWN_WAIT_S = 1.0


class Scheduler:
    """Claims due destinations of `platforms` and sends them as drain tasks."""

    def __init__(
        self, app: Celery, settings: Settings, platforms: Sequence[str], client: redis.Redis
    ) -> None:
        self.app, self.settings, self.platforms = app, settings, list(platforms)
        self.redis = client
        self.keys = [
            k for p in self.platforms for k in (keys.due(p), keys.open_jobs(p), keys.tracker(p))
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
        replies = cast(
            list[Any],
            self.redis.eval(
                lua("workers", "claim_due.lua"), len(self.keys), *self.keys,
                s.scheduler_batch, claim_ms,
            ),
        )  # fmt: skip
        sent = 0
        for platform, (names, track) in zip(self.platforms, replies, strict=True):
            queue = s.queue(platform)
            names = [n.decode() for n in names]
            for i in range(0, len(names), s.drain_group_size):
                group = names[i : i + s.drain_group_size]
                self.app.send_task(
                    DRAIN_TASK, args=[group], queue=queue, expires=s.dispatch_claim_s
                )
                sent += len(group)
            if track:
                self.app.send_task(
                    TRACK_TASK, args=[platform], queue=queue, expires=s.dispatch_claim_s
                )
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
                self._stop.wait(REDIS_DOWN_WAIT_S)
                continue
            if not sent:
                self._stop.wait(self.settings.scheduler_tick_s)

    def start(self) -> None:
        """Run in a daemon thread."""
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
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    return Scheduler(app, settings, platforms, client)
