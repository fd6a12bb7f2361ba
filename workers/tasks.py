"""Thin Celery tasks. Arguments are destination ids and platform names: no events, no secrets."""

from __future__ import annotations

import os
import socket
from typing import Any

import httpx
from celery.utils.log import get_task_logger

from dispatcher import keys
from dispatcher.client import DRAIN_TASK, KICK_GRACE_MS
from dispatcher.storage import connect
from workers import jobs
from workers.app import app, settings
from workers.engine import Engine

log = get_task_logger(__name__)
_engine: tuple[int, Engine] | None = None
# Follow-ups further away than this wait in Redis (state next_at_ms) for the beat sweep,
# never in long Celery countdowns that would outlive the broker's visibility timeout.
MAX_COUNTDOWN_S = 30.0


def engine() -> Engine:
    """This process's engine, built after the fork so no socket is shared with a parent."""
    global _engine
    if _engine is None or _engine[0] != os.getpid():
        http = httpx.Client()  # each request carries its platform's timeout (with_timeout)
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        _engine = (
            os.getpid(),
            Engine(settings, connect(settings.redis_url), http, consumer=consumer),
        )
    return _engine[1]


def schedule(destination: str, in_s: float) -> bool:
    """Queue a drain of `destination` in `in_s` seconds unless one is already queued."""
    if in_s > MAX_COUNTDOWN_S:
        return False
    key = keys.kick_now(destination) if in_s == 0 else keys.kick(destination)
    ttl_ms = int(in_s * 1000) + KICK_GRACE_MS
    if not engine().redis.set(key, 1, nx=True, px=ttl_ms):
        return False
    platform = settings.destination(destination).platform
    options: dict[str, Any] = {"queue": settings.queue(platform)}
    if in_s:
        options["countdown"] = in_s
    drain.apply_async(args=(destination,), **options)
    return True


@app.task(name=DRAIN_TASK, acks_late=True)
def drain(destination: str) -> dict[str, Any]:
    """Deliver one batch of `destination`, then queue the next drain if one is due."""
    report = engine().drain(destination)
    if report.next_in_s is not None:
        schedule(destination, report.next_in_s)
    return report.as_dict()


@app.task(name="convdispatch.sweep", acks_late=True)
def sweep(platform: str) -> dict[str, int]:
    """Queue a drain for every destination of `platform` that has work and no drain.

    This is the guarantee behind the producers' triggers: a lost trigger, a dead
    worker's batch or an expired backoff is picked up within one sweep interval.
    """
    eng = engine()
    now = eng.now_ms()
    kicked = 0
    names = [n for n, d in settings.destinations.items() if d.platform == platform]
    pipe = eng.redis.pipeline(transaction=False)
    for name in names:
        pipe.xlen(keys.stream(name))
        pipe.exists(keys.lease(name))
        pipe.hmget(keys.state(name), "paused", "paused_fp", "next_at_ms")
    replies = pipe.execute()
    for i, name in enumerate(names):
        backlog, leased, (paused, paused_fp, next_at) = replies[3 * i : 3 * i + 3]
        if not backlog or leased or int(next_at or 0) > now:
            continue
        if paused and paused_fp.decode() == settings.destination(name).fingerprint():
            continue
        kicked += schedule(name, 0)
    return {"destinations": len(names), "kicked": kicked}


@app.task(name="convdispatch.track", acks_late=True)
def track(platform: str) -> dict[str, int]:
    """Follow `platform`'s background jobs (uploads, imports) that are due for a look."""
    eng = engine()
    result: dict[str, int] = jobs.track(settings, eng.redis, eng.http, platform, eng.now_ms())
    return result
