"""The delivery engine: drain one batch of one destination, then record every verdict.

Order of a drain: lease -> pause/backoff check -> take a batch (pending entries first,
then new ones once a full batch or `max_wait_s` is reached) -> drop expired events to
dead letters -> wait for a token -> call the platform -> acknowledge, dead-letter,
back off or pause. An entry leaves its stream only when it is acknowledged by the
platform or written to the dead-letter stream in the same transaction.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httpx
import redis

from dispatcher import keys
from dispatcher.settings import Destination, PlatformSettings, Settings
from dispatcher.storage import lua
from workers import jobs
from workers.adapters import Adapter, JobAdapter, Outcome, Verdict, adapter_for
from workers.adapters.base import transport_outcome
from workers.limiter import Limiter, in_flight, with_timeout
from workers.streams import DestinationStream, Entry, batch_id_of, deadline_ms

log = logging.getLogger(__name__)


@dataclass
class DrainReport:
    """What one drain did; returned by the task, so Flower shows it."""

    destination: str
    status: str  # sent | idle | waiting | busy | paused | backing-off
    sent: int = 0
    delivered: int = 0
    dead: int = 0
    retry: int = 0
    resend: int = 0
    http_status: int | None = None
    next_in_s: float | None = None  # when to drain again; 0 = at once

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict for the task result."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, 0) or k == "sent"}


class Engine:
    """Drains destinations. One per worker process; `clock` and `sleep` are injectable."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        http: httpx.Client,
        *,
        consumer: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings, self.redis, self.http = settings, client, http
        self.consumer = consumer or f"worker-{uuid.uuid4().hex[:8]}"
        self.sleep = sleep
        self.rng = rng or random.Random()

    def now_ms(self) -> int:
        """Redis's clock, which also stamps stream ids, in epoch ms."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def drain(self, name: str) -> DrainReport:
        """Deliver at most one batch of `name` while holding its lease."""
        self.redis.delete(keys.kick(name), keys.kick_now(name))
        token = uuid.uuid4().hex
        lease_ms = int(self.settings.lease_s * 1000)
        if not self.redis.set(keys.lease(name), token, nx=True, px=lease_ms):
            return DrainReport(name, "busy")
        try:
            return self._drain_locked(name)
        finally:
            self.redis.eval(lua("workers", "release.lua"), 1, keys.lease(name), token)

    def _drain_locked(self, name: str) -> DrainReport:
        dest = self.settings.destination(name)
        table = self.settings.platform(dest.platform)
        adapter = adapter_for(dest.platform)
        paused = self._paused(name, dest)
        if paused is not None:
            return paused
        now = self.now_ms()
        next_at = int(self.redis.hget(keys.state(name), "next_at_ms") or 0)
        if next_at > now:
            return DrainReport(name, "backing-off", next_in_s=(next_at - now) / 1000)
        stream = DestinationStream(self.redis, name, dest.platform, self.consumer)
        entries, wait_ms = stream.take(table.batch_size, table.max_wait_s, now)
        if not entries:
            status = "waiting" if wait_ms else "idle"
            return DrainReport(name, status, next_in_s=wait_ms / 1000 if wait_ms else None)
        report = DrainReport(name, "sent")
        entries = self._drop_expired(stream, table, entries, now, report)
        if not entries:
            report.next_in_s = 0.0
            return report
        limits = adapter.limits(dest, table)
        limiter = Limiter(self.redis, limits)
        wait_s = limiter.acquire()
        while wait_s > 0:
            if wait_s > self.settings.max_limiter_wait_s:
                # Leave the batch pending; the next drain claims it first.
                report.status, report.next_in_s = "waiting", wait_s
                return report
            self.sleep(wait_s)
            wait_s = limiter.acquire()
        slots = in_flight(self.redis, dest.platform, limits, table)
        if not slots.acquire(self.consumer):
            report.status, report.next_in_s = "waiting", 0.2
            return report
        try:
            self._send(name, adapter, dest, table, limiter, entries, report)
        finally:
            slots.release(self.consumer)
        return report

    def _send(
        self,
        name: str,
        adapter: Adapter,
        dest: Destination,
        table: PlatformSettings,
        limiter: Limiter,
        entries: list[Entry],
        report: DrainReport,
    ) -> None:
        batch_id = batch_id_of(entries)
        if self._reached_already(name, adapter, dest, table, entries, batch_id, report):
            return
        # Marked before sending: if we die before reading the answer, the next drain knows
        # the outcome of this batch is unknown (see `_reached_already`).
        self.redis.hset(keys.state(name), "sending", batch_id)
        outcome, maybe_sent = self._call(adapter, dest, table, entries, batch_id)
        if not maybe_sent:
            self.redis.hdel(keys.state(name), "sending")
        self._apply(name, dest, table, limiter, entries, outcome, report, batch_id)

    def _reached_already(
        self,
        name: str,
        adapter: Adapter,
        dest: Destination,
        table: PlatformSettings,
        entries: list[Entry],
        batch_id: str,
        report: DrainReport,
    ) -> bool:
        """After an unknown outcome, ask platforms that cannot deduplicate whether this
        very batch arrived before sending it again; True if it did (and is now acked)."""
        sending = cast(bytes | None, self.redis.hget(keys.state(name), "sending"))
        if sending is None or sending.decode() != batch_id:
            return False
        if not isinstance(adapter, JobAdapter):
            return False
        request = adapter.lookup_request(dest, table, batch_id)
        if request is None:
            return False
        try:
            job_id = adapter.parse_lookup(self.http.send(with_timeout(request, table)), batch_id)
        except httpx.HTTPError:
            return False  # still unknown: resending is the lesser risk than losing it
        self.redis.hdel(keys.state(name), "sending")
        if job_id is None:
            return False
        log.warning(
            "destination %s: batch %s had reached the platform as job %s", name, batch_id, job_id
        )
        outcome = Outcome.every(len(entries), Verdict.DELIVERED, job_id=job_id, job_state="found")
        self._apply(name, dest, table, None, entries, outcome, report, batch_id)
        return True

    def _paused(self, name: str, dest: Destination) -> DrainReport | None:
        paused, fingerprint = cast(
            list[bytes | None], self.redis.hmget(keys.state(name), "paused", "paused_fp")
        )
        if not paused:
            return None
        if fingerprint and bytes(fingerprint).decode() != dest.fingerprint():
            log.warning("destination %s: credentials changed, resuming", name)
            self.redis.hdel(keys.state(name), "paused", "paused_fp", "pause_reason")
            return None
        return DrainReport(name, "paused")

    def _drop_expired(
        self,
        stream: DestinationStream,
        table: PlatformSettings,
        entries: list[Entry],
        now: int,
        report: DrainReport,
    ) -> list[Entry]:
        live: list[Entry] = []
        expired: list[tuple[Entry, str]] = []
        reason = "expired: past the platform's acceptance window or max_retry_age_s"
        for entry in entries:
            if deadline_ms(table, entry) > now:
                live.append(entry)
            else:
                expired.append((entry, reason))
        stream.dead_letter(expired, None, "", now, counted=True)
        report.dead += len(expired)
        return live

    def _call(
        self,
        adapter: Adapter,
        dest: Destination,
        table: PlatformSettings,
        entries: list[Entry],
        batch_id: str,
    ) -> tuple[Outcome, bool]:
        """The platform's verdicts, and whether the request may have reached it unanswered."""
        payloads = [fields[b"p"] for _, fields in entries]
        request = with_timeout(adapter.build_request(dest, table, payloads, batch_id), table)
        try:
            response = self.http.send(request)
        except httpx.HTTPError as exc:  # the one place transport errors are translated
            never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            return transport_outcome(exc, len(entries)), not never_sent
        return adapter.parse_response(response, len(entries)), False

    def _apply(
        self,
        name: str,
        dest: Destination,
        table: PlatformSettings,
        limiter: Limiter | None,
        entries: list[Entry],
        outcome: Outcome,
        report: DrainReport,
        batch_id: str,
    ) -> None:
        report.sent, report.http_status = len(entries), outcome.status
        stream = DestinationStream(self.redis, name, dest.platform, self.consumer)
        by_verdict: dict[Verdict, list[tuple[Entry, str]]] = {v: [] for v in Verdict}
        for entry, result in zip(entries, outcome.results, strict=True):
            by_verdict[result.verdict].append((entry, result.reason))
        for warning in outcome.warnings:
            log.warning("destination %s: platform warning: %s", name, warning)
        if outcome.warnings:
            self.redis.hincrby(keys.state(name), "warnings", len(outcome.warnings))
        delivered = [e[0] for e, _ in by_verdict[Verdict.DELIVERED]]
        if outcome.job_id is not None:
            poll_s = float(getattr(table, "job_poll_interval_s", 30.0))
            rows = [e for e, _ in by_verdict[Verdict.DELIVERED]]
            jobs.record(
                self.redis, dest.platform, name, outcome.job_id, batch_id, rows,
                outcome.job_state, outcome.job_detail, self.now_ms(), poll_s,
            )  # fmt: skip
        if delivered:
            stream.ack(delivered)
            self.redis.hset(keys.state(name), "failures", 0)
            self.redis.hdel(keys.state(name), "last_error")
        rejected = by_verdict[Verdict.REJECTED]
        stream.dead_letter(rejected, outcome.status, outcome.excerpt, self.now_ms())
        report.delivered, report.resend = len(delivered), len(by_verdict[Verdict.RESEND])
        report.dead += len(by_verdict[Verdict.REJECTED])
        if by_verdict[Verdict.AUTH]:
            reason = by_verdict[Verdict.AUTH][0][1]
            self.redis.hset(
                keys.state(name),
                mapping={"paused": 1, "paused_fp": dest.fingerprint(), "pause_reason": reason},
            )
            log.error("destination %s paused: %s", name, reason)
            report.status = "paused"
            return
        if by_verdict[Verdict.RETRY]:
            self._back_off(stream, table, limiter, by_verdict[Verdict.RETRY], outcome, report)
            return
        report.next_in_s = 0.0  # more may be waiting: drain again at once

    def _back_off(
        self,
        stream: DestinationStream,
        table: PlatformSettings,
        limiter: Limiter | None,
        failed: list[tuple[Entry, str]],
        outcome: Outcome,
        report: DrainReport,
    ) -> None:
        name = stream.name
        failures = int(self.redis.hincrby(keys.state(name), "failures", 1))
        ceiling = min(table.backoff_cap_s, table.backoff_base_s * 2 ** (failures - 1))
        delay_s = max(self.rng.uniform(0, ceiling), outcome.retry_after_s or 0.0)
        now = self.now_ms()
        resume_ms = now + int(delay_s * 1000)
        if outcome.throttled and limiter is not None:
            limiter.block_until(resume_ms, outcome.block_scopes)
        attempts = stream.count_failure([entry for entry, _ in failed])
        reason = failed[0][1]
        give_up = [
            (entry, f"gave up after {n} attempts: {reason}")
            for (entry, _), n in zip(failed, attempts, strict=True)
            if n >= table.max_attempts or deadline_ms(table, entry) <= resume_ms
        ]
        stream.dead_letter(give_up, outcome.status, outcome.excerpt, now, counted=True)
        report.dead += len(give_up)
        report.retry = len(failed) - len(give_up)
        self.redis.hset(keys.state(name), "last_error", reason)
        if not report.retry:
            report.next_in_s = 0.0  # nothing of this batch waits; others may
            return
        self.redis.hset(keys.state(name), "next_at_ms", resume_ms)
        self.redis.hincrby(keys.state(name), "retried", report.retry)
        log.warning("destination %s: %s; retrying in %.1fs", name, reason, delay_s)
        report.status, report.next_in_s = "backing-off", delay_s
