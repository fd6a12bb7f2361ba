"""Thin Celery tasks. Arguments are destination ids and platform names: no events, no secrets."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from dispatcher import keys
from dispatcher.errors import UnknownDestinationError
from dispatcher.settings import PLATFORMS
from dispatcher.storage import LOST, open_store, reopen_store
from workers import jobs
from workers.app import app, settings
from workers.engine import DrainStatus, Engine
from workers.request import PlatformClient
from workers.scheduler import DRAIN_TASK, TRACK_TASK

log = logging.getLogger(__name__)
_engine: tuple[int, Engine] | None = None


def engine(lost: bool = False) -> Engine:
    """This process's engine, built after the fork so no socket is shared with a parent;
    with `lost`, rebuilt on a new Redis client (see `reopen_store`)."""
    global _engine
    if _engine is None or _engine[0] != os.getpid() or lost:
        http = PlatformClient()  # each request carries its platform's timeout (with_timeout)
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        old = _engine[1].redis if _engine is not None and _engine[0] == os.getpid() else None
        client = reopen_store(settings, old) if old is not None else open_store(settings)
        _engine = (os.getpid(), Engine(settings, client, http, consumer=consumer))
    return _engine[1]


@app.task(name=DRAIN_TASK, acks_late=True)
def drain(destinations: list[str] | str) -> list[dict[str, Any]]:
    """Drain each of `destinations` (ids of one platform) while holding its lease."""
    names = [destinations] if isinstance(destinations, str) else destinations
    try:
        drained = engine().drain_many(names)
    except LOST:
        engine(lost=settings.redis_cluster)  # the next task starts on a new cluster client
        raise
    reports = []
    for name, report in zip(names, drained, strict=True):
        if isinstance(report, UnknownDestinationError):
            # No longer configured: stop scheduling it. Its events stay (see `orphans`).
            for platform in PLATFORMS:
                engine().redis.zrem(keys.due(platform, keys.shard(name)), name)
            engine().redis.sadd(keys.orphans(), name)
            log.warning("destination %s is not configured: no longer scheduled", name)
            reports.append({"destination": name, "status": str(DrainStatus.UNKNOWN)})
        else:
            reports.append(report.as_dict())
    return reports


@app.task(name=TRACK_TASK, acks_late=True)
def track(platform: str, shard: int = 0) -> dict[str, int]:
    """Follow `platform`'s background jobs (uploads, imports) of `shard` due for a look."""
    eng = engine()
    try:
        result: dict[str, int] = jobs.track(
            eng.registry, eng.redis, eng.path, platform, eng.now_ms(), shard
        )
    finally:
        eng.redis.delete(keys.tracker(platform, shard))
    return result
