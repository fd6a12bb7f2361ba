"""Settling a batch: every step of it in one fenced Lua script (settle.lua beside this).

Acknowledging, dead-lettering, counting attempts, recording the platform's job, forgetting
the unknown-outcome marker, counters, backoff and pause: all or nothing, and nothing at all
for a drain whose lease has been taken over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from dispatcher import keys
from dispatcher.settings import Settings
from dispatcher.storage import run
from workers.metrics import DELIVERY_BUCKETS

JOB_TTL_S = 7 * 86_400  # how long a job stays visible after its maximum age
BOUNDS = " ".join(f"{b:g}" for b in DELIVERY_BUCKETS)


@dataclass
class Settlement:
    """What to do with the entries of one batch; ids are stream entry ids."""

    acked: list[bytes] = field(default_factory=list)
    dead: list[tuple[bytes, str, bool]] = field(default_factory=list)  # id, reason, attempt?
    retry: list[bytes] = field(default_factory=list)
    retry_counted: bool = True
    retry_reason: str = ""
    forget_batch: str = ""  # the unknown-outcome marker to clear
    status: int | None = None
    excerpt: str = ""
    job_id: str = ""
    job_state: str = ""
    job_detail: str = ""
    job_poll_s: float = 30.0
    job_max_age_s: float = 86_400.0
    next_at_ms: int = 0
    failures: str = ""  # "reset" | "incr" | ""
    last_error: str = ""
    pause_reason: str = ""
    pause_fingerprint: str = ""
    warnings: int = 0
    batch_id: str = ""  # names the batch in the delivery record the trace reads


class FencedError(Exception):
    """Raised when the drain's lease was taken over, so it may settle nothing."""


def settle(
    client: redis.Redis,
    settings: Settings,
    name: str,
    platform: str,
    token: str,
    consumer: str,
    s: Settlement,
) -> tuple[int, int]:
    """Apply `s` for the lease holder `token`; returns (acknowledged, dead-lettered).

    Raises:
        FencedError: the lease is no longer `token`'s; nothing was changed.
    """
    table = settings.platform(platform)
    job = s.job_id or "-"
    shard = keys.shard(name)  # the per-platform keys of this destination's shard
    keys_ = [
        keys.lease(name), keys.stream(name), keys.state(name), keys.attempts(name),
        keys.sending(name), keys.deadletters(platform, shard), keys.job(platform, job, shard),
        keys.job_events(platform, job, shard), keys.open_jobs(platform, shard),
        keys.jobs_index(platform, shard), keys.deliveries(name),
        keys.delivery_latency(platform, shard),
    ]  # fmt: skip
    args: list[Any] = [
        token, keys.GROUP, consumer, name, s.forget_batch, table.max_attempts,
        int(settings.dead_letter_retention_s * 1000), "" if s.status is None else s.status,
        s.excerpt, len(s.acked), *s.acked, len(s.dead),
    ]  # fmt: skip
    for entry_id, reason, attempt in s.dead:
        args += [entry_id, reason, int(attempt)]
    args += [len(s.retry), int(s.retry_counted), s.retry_reason, int(settings.lease_s * 1000)]
    args += s.retry
    ttl_ms = int((s.job_max_age_s + JOB_TTL_S) * 1000)
    args += [s.job_id, s.job_state, s.job_detail, int(s.job_poll_s * 1000), ttl_ms]
    args += [s.next_at_ms, s.failures, s.last_error, s.pause_reason, s.pause_fingerprint]
    args += [s.warnings, s.batch_id, int(settings.idempotency_window_s * 1000), BOUNDS]
    reply = run(client, "workers", "settle.lua", keys_, *args)
    if int(reply[0]) < 0:
        raise FencedError(name)
    return int(reply[0]), int(reply[1])


def mark_sending(client: redis.Redis, name: str, token: str, batch_id: str, record: str) -> bool:
    """Record `batch_id` as about to be sent (outcome unknown until settled)."""
    return bool(
        run(
            client, "workers", "mark.lua", [keys.lease(name), keys.sending(name)],
            token, batch_id, record,
        )
    )  # fmt: skip
