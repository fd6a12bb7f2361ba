"""Settling a batch: every step of it in one fenced Lua script (settle.lua beside this).

Acknowledging, dead-lettering, counting attempts, recording the platform's job, forgetting
the unknown-outcome marker, counters, backoff and pause: all or nothing, and nothing at all
for a drain whose lease has been taken over. `Settler` turns a batch's outcome (the
adapter's verdicts, a failed call) into its `Settlement` and applies it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from dispatcher import keys
from dispatcher.settings import Settings
from dispatcher.storage import run
from workers.adapters import Outcome, Verdict
from workers.drains import Drain, DrainStatus
from workers.limiter import Limiter
from workers.metrics import DELIVERY_BUCKETS
from workers.request import Target
from workers.streams import Entry, deadline_ms

# A drain's lines, the settled batches' included, come from one logger, as they always did.
log = logging.getLogger("workers.engine")

JOB_TTL_S = 7 * 86_400  # how long a job stays visible after its maximum age
BOUNDS = " ".join(f"{b:g}" for b in DELIVERY_BUCKETS)


@dataclass
class Settlement:
    """What to do with the entries of one batch; ids are stream entry ids."""

    acked: list[bytes] = field(default_factory=list)
    dead: list[tuple[bytes, str, bool]] = field(default_factory=list)  # id, reason, attempt?
    retry: list[bytes] = field(default_factory=list)
    retry_counted: bool = True  # whether `retry` counts an attempt
    retry_reason: str = ""
    wait: list[bytes] = field(default_factory=list)  # retried too, never counting an attempt
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
    counted = len(s.retry) if s.retry_counted else 0  # the first `counted` ids count one
    args += [len(s.retry) + len(s.wait), counted, s.retry_reason, int(settings.lease_s * 1000)]
    args += s.retry + s.wait
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


class Settler:
    """Judges and settles the batches of one worker process's drains."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        consumer: str,
        now_ms: Callable[[], int],
        rng: random.Random,
    ) -> None:
        self.redis, self.settings, self.consumer = client, settings, consumer
        self.now_ms, self.rng = now_ms, rng

    def settlement(
        self, run: Drain, entries: list[Entry], outcome: Outcome, batch_id: str, forget: str
    ) -> Settlement:
        name, target = run.target.name, run.target
        by: dict[Verdict, list[tuple[Entry, str]]] = {v: [] for v in Verdict}
        taken = outcome.all_delivered  # the common case: no grouping per event
        for entry, result in () if taken else zip(entries, outcome.results, strict=True):
            by[result.verdict].append((entry, result.reason))
        for warning in outcome.warnings:
            log.warning("destination %s: platform warning: %s", name, warning)
        retry, waits = by[Verdict.RETRY], by[Verdict.WAIT]
        if retry or waits:
            # Failures count an attempt, throttled events (a per-element 429) never do.
            first = retry or waits
            uncounted = [e for e, _ in waits] if retry else []
            s = self.back_off(
                run, [e for e, _ in first], first[0][1], bool(retry), outcome, forget, uncounted
            )
        elif by[Verdict.AUTH]:
            reason = by[Verdict.AUTH][0][1]
            log.error("destination %s paused: %s", name, reason)
            s = Settlement(
                retry=[e[0] for e, _ in by[Verdict.AUTH]], retry_counted=False,
                pause_reason=reason, pause_fingerprint=fingerprint(target), last_error=reason,
                forget_batch=forget,
            )  # fmt: skip
            run.report.stop(DrainStatus.PAUSED)
        else:
            s = Settlement(forget_batch=forget, failures="reset", retry_counted=False)
        if by[Verdict.AUTH] and (retry or waits):  # both: keep the paused ones too
            s.wait += [e[0] for e, _ in by[Verdict.AUTH]]
        s.wait += [e[0] for e, _ in by[Verdict.RESEND]]  # sent again, no attempt counted
        s.acked = [e[0] for e in entries] if taken else [e[0] for e, _ in by[Verdict.DELIVERED]]
        s.dead += [(e[0], reason, True) for e, reason in by[Verdict.REJECTED]]
        s.status, s.excerpt, s.warnings = outcome.status, outcome.excerpt, len(outcome.warnings)
        s.batch_id = batch_id
        if outcome.job_id is not None and s.acked:
            s.job_id, s.job_state, s.job_detail = (
                outcome.job_id,
                outcome.job_state,
                outcome.job_detail,
            )
            s.job_poll_s = float(getattr(target.table, "job_poll_interval_s", 30.0))
            s.job_max_age_s = float(getattr(target.table, "job_max_age_s", 86_400.0))
        return s

    def back_off(
        self,
        run: Drain,
        entries: list[Entry],
        reason: str,
        counted: bool,
        outcome: Outcome | None,
        forget: str,
        uncounted: list[Entry] | None = None,
    ) -> Settlement:
        """Retry `entries` later: counted failures back off exponentially with full jitter;
        throttling waits as long as the platform says, and counts no attempt (nor do the
        `uncounted` entries, retried with them: the throttled events of a failed batch)."""
        table = run.target.table
        ceiling = min(table.backoff_cap_s, table.backoff_base_s * 2**run.failures)
        delay_s = self.rng.uniform(0, ceiling) if counted else min(ceiling, table.backoff_base_s)
        if outcome is not None and outcome.retry_after_s is not None:
            delay_s = max(delay_s, outcome.retry_after_s) if counted else outcome.retry_after_s
        now = self.now_ms()
        resume_ms = now + int(delay_s * 1000)
        if outcome is not None and outcome.throttled:
            Limiter(self.redis, run.target.limits).block_until(resume_ms, outcome.block_scopes)
        waits = uncounted or []
        over = {e[0] for e in entries + waits if deadline_ms(table, e) <= resume_ms}  # ids
        ended = f"gave up: the time budget ends before the next try: {reason}"
        log.warning("destination %s: %s; retrying in %.1fs", run.target.name, reason, delay_s)
        run.report.stop(DrainStatus.BACKING_OFF, resume_ms)
        return Settlement(
            retry=[e[0] for e in entries if e[0] not in over], retry_counted=counted,
            retry_reason=reason, wait=[e[0] for e in waits if e[0] not in over],
            dead=[(e[0], ended, counted) for e in entries if e[0] in over]
            + [(e[0], ended, False) for e in waits if e[0] in over],
            next_at_ms=resume_ms, failures="incr" if counted else "", last_error=reason,
            forget_batch=forget,
        )  # fmt: skip

    def settle(self, run: Drain, s: Settlement) -> None:
        target = run.target
        settling = partial(
            settle, self.redis, self.settings, target.name, target.destination.platform,
            run.lease.token, self.consumer, s,
        )  # fmt: skip
        try:
            acked, dead = settling()
        except FencedError:
            # The lease may only have run out (this process kept from the CPU past it): if
            # no other drain has taken it since, it is ours again and nothing was touched.
            if not run.lease.renew():
                raise
            acked, dead = settling()
        # Counted retries that reached max_attempts were dead-lettered by the script.
        retried = max(0, len(s.retry) + len(s.wait) - max(0, dead - len(s.dead)))
        if acked or dead or retried:
            # A line per batch is noise in a text log, but what a log pipeline counts
            # batches by: JSON logs keep it at INFO (the README promises it there).
            level = logging.INFO if self.settings.log_format == "json" else logging.DEBUG
            log.log(
                level,
                "destination %s batch %s: %d delivered, %d dead, %d to retry (HTTP %s)",
                target.name, s.batch_id or "-", acked, dead, retried, s.status or "-",
                extra={"destination": target.name, "platform": target.destination.platform,
                       "batch": s.batch_id, "outcome": _outcome(acked, dead, retried, s),
                       "status": s.status, "events": acked + dead + retried},
            )  # fmt: skip
        with run.report._lock:
            run.report.delivered += acked
            run.report.dead += dead
            run.report.retry += retried


def _outcome(acked: int, dead: int, retried: int, s: Settlement) -> str:
    """One word for a settled batch, for the JSON log's `outcome` field."""
    if s.pause_reason:
        return "paused"
    parts = [w for w, n in (("delivered", acked), ("dead", dead), ("retry", retried)) if n]
    return "+".join(parts)


def fingerprint(target: Target) -> str:
    """The destination's credentials fingerprint: a pause holds until it changes."""
    try:
        return target.destination.fingerprint()
    except Exception:  # an unset token env var: nothing to compare, stay paused
        return "unset"
