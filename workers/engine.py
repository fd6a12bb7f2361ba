"""The delivery engine: drain a destination while holding its lease.

Order of a drain (docs/architecture.md): lease -> pause, backoff, limiter and slot checks ->
batches whose outcome is unknown (look-up first) -> pending entries (a retry, a dead
holder's batch) -> new entries, full batches or one due partial batch -> drop expired
events -> the request path -> the fenced settle script. Up to `max_batches_in_flight`
batches of one destination are in flight at once.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import cast

import httpx
import redis

from dispatcher import keys
from dispatcher.compact import expand_all
from dispatcher.errors import ConfigurationError, UnknownDestinationError
from dispatcher.registry import Registry
from dispatcher.settings import Settings
from workers.adapters import (
    Adapter,
    JobAdapter,
    Outcome,
    Verdict,
    adapter_for,
    follows_jobs,
    whole_batch,
)
from workers.drains import Drain, DrainReport, DrainStatus
from workers.jobs import call_unless_throttled
from workers.lease import Lease, Start
from workers.limiter import in_flight
from workers.oauth import TokenStore
from workers.request import Failed, NotSent, RequestPath, Target
from workers.settle import FencedError, Settlement, Settler, fingerprint, mark_sending
from workers.streams import (
    DestinationStream,
    Entry,
    batch_id_of,
    budget_ms,
    entry_ms,
)

log = logging.getLogger(__name__)
EXPIRED = "expired: past the platform's acceptance window or max_retry_age_s"
SLOTS_RECHECK_MS = 1000  # every in-flight slot taken: look again this much later


class Engine:
    """Drains destinations. One per worker process; `sleep` and `rng` are injectable."""

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
        self.tokens = TokenStore(client, http, settings, sleep=sleep)
        self.registry = Registry(settings, client)
        self.settler = Settler(client, settings, self.consumer, self.now_ms, self.rng)
        self.path = RequestPath(
            client, http, self.consumer, settings.max_limiter_wait_s, sleep, self.tokens
        )
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="batch")
        self._destinations = ThreadPoolExecutor(
            max_workers=settings.drain_parallel, thread_name_prefix="drain"
        )

    def now_ms(self) -> int:
        """Redis's clock, which also stamps stream ids, in epoch ms."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def target(self, name: str) -> Target:
        """What calls for destination `name` need (raises ConfigurationError if unknown)."""
        dest = self.tokens.bind(self.registry.destination(name))
        table = self.settings.platform(dest.platform)
        adapter = adapter_for(dest.platform)
        return Target(name, dest, table, adapter, adapter.limits(dest, table))

    def drain_many(self, names: list[str]) -> list[DrainReport | UnknownDestinationError]:
        """Drain several destinations at once (`drain_parallel` at a time), so a task of
        many small destinations overlaps their calls; a report, or the error, for each."""
        if len(names) == 1:
            return [self._drain_or_error(names[0])]
        return list(self._destinations.map(self._drain_or_error, names))

    def _drain_or_error(self, name: str) -> DrainReport | UnknownDestinationError:
        try:
            return self.drain(name)
        except UnknownDestinationError as exc:
            return exc

    def drain(self, name: str) -> DrainReport:
        """Deliver what is due for `name` while holding its lease."""
        target = self.target(name)
        lease = Lease(self.redis, self.settings, name, target.destination.platform)
        # One call takes the lease, reads the state and the limiter, and says what to read
        # first when nothing stops a send (a disabled destination reads nothing).
        start = lease.start(target.table, target.limits, read=target.destination.enabled)
        if start is None:
            return DrainReport(name, DrainStatus.BUSY)
        report = DrainReport(name)
        started = time.monotonic()
        stream = DestinationStream(self.redis, name, self.consumer, lease.ms)
        try:
            failures = int(start.state.get(b"failures", 0))
            run = Drain(target, lease, stream, report, failures, start)
            if self._ready(run, start):
                self._batches(run)
        except FencedError:
            report.status = DrainStatus.FENCED
        finally:
            drain_s = time.monotonic() - started if report.batches else None
            lease.release(target.table, report.not_before_ms, drain_s)
        idle = report.status is DrainStatus.IDLE
        if target.destination.draining and idle and self.registry.finish_draining(name):
            log.warning("destination %s: backlog delivered, removed from the registry", name)
        return report

    # -- before reading anything ---------------------------------------------------------

    def _ready(self, run: Drain, start: Start) -> bool:
        """Pause, backoff, limiter and unknown outcomes: may this drain read a batch?"""
        name, report, target, state = run.target.name, run.report, run.target, start.state
        if not target.destination.enabled:  # disabled in the registry: look again later
            report.stop(
                DrainStatus.PAUSED, start.now_ms + int(self.settings.pause_recheck_s * 1000)
            )
            return False
        if state.get(b"paused"):
            paused_fp = state.get(b"paused_fp", b"").decode()
            if not paused_fp or paused_fp != fingerprint(target):
                log.warning("destination %s: credentials changed, resuming", name)
                self.redis.hdel(keys.state(name), "paused", "paused_fp", "pause_reason")
            elif self._revived(target, state.get(b"pause_reason", b"").decode()):
                log.warning("destination %s: the OAuth refresh works again, resuming", name)
                self.redis.hdel(keys.state(name), "paused", "paused_fp", "pause_reason")
            else:
                report.stop(DrainStatus.PAUSED)
                return False
        now = start.now_ms
        next_at = int(state.get(b"next_at_ms", 0))
        if next_at > now:
            report.stop(DrainStatus.BACKING_OFF, next_at)
            return False
        wait_s = start.limiter_wait_s  # Limiter.peek, read when the lease was taken
        if wait_s > self.settings.max_limiter_wait_s:
            report.stop(DrainStatus.WAITING, now + int(wait_s * 1000))
            return False
        slots = in_flight(self.redis, target.adapter.platform, target.limits, target.table)
        if not slots.free():  # every call slot is taken elsewhere: read no batch for nothing
            report.stop(DrainStatus.WAITING, now + SLOTS_RECHECK_MS)
            return False
        # The lease script decides no read while an unknown outcome waits for its look-up.
        if follows_jobs(target.adapter) and start.read == "none":
            self._unknown_outcomes(run, now)
        return not report.stopped

    def _revived(self, target: Target, reason: str) -> bool:
        """An OAuth destination paused for its token: does a refresh work now?"""
        if target.destination.oauth is None or not ("OAuth" in reason or "(401)" in reason):
            return False
        try:
            self.tokens.revive(target.destination)
        except ConfigurationError as exc:
            self.redis.hset(keys.state(target.name), "pause_reason", str(exc))
            return False
        return True

    def _unknown_outcomes(self, run: Drain, now: int) -> None:
        """Batches sent with no answer seen: ask the platform before sending them again."""
        target = run.target
        adapter = cast(JobAdapter, target.adapter)
        marks = cast(dict[bytes, bytes], self.redis.hgetall(keys.sending(target.name)))
        delay_ms = int(float(getattr(target.table, "lookup_delay_s", 0.0)) * 1000)
        for raw_id, raw in marks.items():
            if run.report.stopped:  # a resend, a wait or a pause ends this drain
                return
            batch_id, record = raw_id.decode(), json.loads(raw)
            if now < record["at"] + delay_ms:  # give the platform time to list the upload
                run.report.stop(DrainStatus.WAITING, record["at"] + delay_ms)
                return
            entries = run.stream.claim_ids([i.encode() for i in record["ids"]])
            if not entries:  # all ended meanwhile (dead-lettered, expired): nothing to ask
                self.settler.settle(run, Settlement(forget_batch=batch_id))
                continue
            request = adapter.lookup_request(target.destination, target.table, batch_id)
            assert request is not None  # only platforms with a look-up are marked
            found = call_unless_throttled(
                self.path, target, partial(_same, request),
                partial(_found, adapter, batch_id=batch_id), now,
            )  # fmt: skip
            if isinstance(found, NotSent):
                run.report.stop(DrainStatus.WAITING, now + int(found.wait_s * 1000))
                return
            if isinstance(found, Failed) and found.pause:  # the listing refused the token
                self.settler.settle(
                    run,
                    Settlement(
                        pause_reason=found.reason, pause_fingerprint=fingerprint(target),
                        last_error=found.reason,
                    ),
                )  # fmt: skip
                run.report.stop(DrainStatus.PAUSED)
                return
            if isinstance(found, Failed):
                # Still unknown: the entries stay pending and marked, an attempt counted, so
                # `max_attempts` or their time budget ends them (dead-lettered, saying so).
                reason = (
                    f"outcome unknown, the look-up failed ({found.reason}): the upload may "
                    "have reached the platform, check before replaying"
                )
                self.settler.settle(
                    run, self.settler.back_off(run, entries, reason, True, None, "")
                )
                return
            if found:
                log.warning(
                    "%s: batch %s had reached the platform as %s", target.name, batch_id, found
                )
                outcome = Outcome.every(
                    len(entries), Verdict.DELIVERED, job_id=found, job_state="found"
                )
                self.settler.settle(
                    run, self.settler.settlement(run, entries, outcome, batch_id, batch_id)
                )
            else:
                self._deliver(run, entries, batch_id, marked=True)

    # -- batches -------------------------------------------------------------------------

    def _batches(self, run: Drain) -> None:
        report = run.report
        futures: list[Future[None]] = []  # the batches in flight, kept by `_read_and_send`
        try:
            self._read_and_send(run, futures)
        except BaseException:
            wait(futures)  # the batches in flight settle (or are fenced) before the lease goes
            raise
        if not (report.batches or report.dead or report.delivered or report.stopped):
            report.status = DrainStatus.IDLE

    def _read_and_send(self, run: Drain, futures: list[Future[None]]) -> None:
        table, report = run.target.table, run.report
        size, in_flight = table.batch_size, table.max_batches_in_flight
        first, now = ("none", 0) if run.start is None else (run.start.read, run.start.now_ms)
        if first in ("new", "checked"):  # the lease script saw nothing pending, and looked
            entries = run.stream.read_new(size) if first == "new" else []
            young, looked = False, True
        else:
            entries, young = run.stream.claim_pending(size)
            looked = False
        if young:  # a holder that just lost its lease may still be sending those: come back
            report.not_before_ms = max(report.not_before_ms, self.now_ms() + run.lease.ms)
        for _ in range(self.settings.drain_max_batches):
            if report.stopped or not run.lease.held():  # read nothing for a lost lease
                break
            if not entries and not looked:
                entries = run.stream.take_new(size, table.max_wait_s, self.now_ms())
            looked = False
            if not entries:
                break
            full = len(entries) >= size
            entries = self._drop_expired(run, entries, now)
            now = 0
            if entries and not full and not futures:  # the last batch, alone: no hand-off
                self._deliver(run, entries)
                report.batches += 1
            elif entries:
                futures.append(self._pool.submit(self._deliver, run, entries))
                report.batches += 1
            entries = []
            if len(futures) >= in_flight:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                futures[:] = [f for f in futures if f not in done]
                for f in done:
                    f.result()
            if not full:
                break
        while futures:
            futures.pop(0).result()

    def _drop_expired(self, run: Drain, entries: list[Entry], now: int = 0) -> list[Entry]:
        now = now or self.now_ms()
        live: list[Entry] = []
        expired: list[Entry] = []
        # deadline_ms(entry) > now, with the table's numbers read once (a hot path)
        window_ms, age_ms = budget_ms(run.target.table)
        for entry in entries:
            alive = int(entry[1][b"t"]) + window_ms > now and entry_ms(entry[0]) + age_ms > now
            (live if alive else expired).append(entry)
        if expired:
            self.settler.settle(run, Settlement(dead=[(e[0], EXPIRED, False) for e in expired]))
        return live

    def _deliver(
        self, run: Drain, entries: list[Entry], batch_id: str = "", marked: bool = False
    ) -> None:
        """Send one batch through the request path and settle what came back."""
        target = run.target
        adapter, dest, table = target.adapter, target.destination, target.table
        payloads = expand_all(dest.platform, [fields[b"p"] for _, fields in entries])
        if not marked:  # a marked batch is resent as it was first sent
            parts = _parts(adapter, payloads)
            if len(parts) > 1:  # rows the platform takes in separate requests (Yandex)
                for part in parts:
                    if run.report.stopped:  # paused, backing off or waiting: so is the rest
                        kept = [entries[i][0] for i in part]
                        self.settler.settle(run, Settlement(retry=kept, retry_counted=False))
                    else:
                        self._deliver(run, [entries[i] for i in part])
                return
        batch_id = batch_id or batch_id_of(entries)
        if _has_lookup(target):  # a resend too: the look-up then waits from this send
            record = json.dumps({"ids": [e[0].decode() for e in entries], "at": self.now_ms()})
            if not mark_sending(self.redis, target.name, run.lease.token, batch_id, record):
                raise FencedError(target.name)
            marked = True
        n = len(entries)
        if not run.lease.held():  # taken over: a batch sent now could not be settled
            raise FencedError(target.name)
        result = self.path.call(
            target,
            lambda: adapter.build_request(dest, table, payloads, batch_id),
            lambda response: _checked(adapter.parse_response(response, n), n),
        )
        forget = batch_id if marked else ""
        if isinstance(result, NotSent):
            self.settler.settle(
                run,
                Settlement(
                    retry=[e[0] for e in entries], retry_counted=False, forget_batch=forget,
                    next_at_ms=self.now_ms() + int(result.wait_s * 1000),
                ),
            )  # fmt: skip
            run.report.stop(DrainStatus.WAITING)
            return
        if isinstance(result, Failed):
            if not result.pause:
                keep = result.maybe_sent
                settlement = self.settler.back_off(
                    run, entries, result.reason, True, None, "" if keep else forget
                )
            else:
                settlement = Settlement(
                    retry=[e[0] for e in entries], retry_counted=False, forget_batch=forget,
                    pause_reason=result.reason, pause_fingerprint=fingerprint(target),
                    last_error=result.reason,
                )  # fmt: skip
                run.report.stop(DrainStatus.PAUSED)
            self.settler.settle(run, settlement)
            return
        with run.report._lock:
            run.report.sent += n
            run.report.http_status = result.status
        if result.split and n > 1:
            self.settler.settle(run, Settlement(forget_batch=forget))
            self._deliver(run, entries[: n // 2])
            self._deliver(run, entries[n // 2 :])
            return
        self.settler.settle(run, self.settler.settlement(run, entries, result, batch_id, forget))


def _parts(adapter: Adapter, payloads: list[bytes]) -> list[list[int]]:
    """`adapter.parts`, or the whole batch if it raises (the request path then counts the
    adapter's failure, if building the request fails too)."""
    try:
        return adapter.parts(payloads)
    except Exception:  # an adapter never stops a drain
        log.exception("%s adapter: parts failed; sending the batch whole", adapter.platform)
        return whole_batch(payloads)


def _has_lookup(target: Target) -> bool:
    return follows_jobs(target.adapter) and target.adapter.can_look_up


def _checked(outcome: Outcome, n: int) -> Outcome:
    """An adapter's outcome, refused (as an adapter error) unless it judges all `n` events."""
    if len(outcome.results) != n:
        raise ValueError(f"the adapter judged {len(outcome.results)} of {n} events")
    return outcome


def _same(request: httpx.Request) -> httpx.Request:
    return request


def _found(adapter: JobAdapter, response: httpx.Response, batch_id: str) -> str | Failed:
    """The job id of an earlier send of `batch_id`, or "" when the listing shows none; a
    listing refused for its credentials pauses."""
    status = response.status_code
    if status in (401, 403):
        return Failed(f"credentials refused ({status}) listing uploads", True, pause=True)
    return adapter.parse_lookup(response, batch_id) or ""


__all__ = ["DrainReport", "DrainStatus", "Engine", "entry_ms"]
