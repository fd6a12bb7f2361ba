"""The adapter interface and the HTTP facts shared by every platform."""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Protocol, TypeGuard, runtime_checkable

import httpx

from dispatcher.settings import Destination, PlatformSettings
from workers.limiter import Limit

EXCERPT_CHARS = 500


@functools.lru_cache(maxsize=4096)
def endpoint(base_url: str, path: str) -> httpx.URL:
    """`base_url` joined with `path`, parsed once: a str URL is parsed on every request
    (~15 µs of a small drain's CPU)."""
    return httpx.URL(base_url.rstrip("/") + path)


class Verdict(StrEnum):
    """What happened to one event of a batch."""

    DELIVERED = "delivered"  # the platform took it: acknowledge
    RESEND = "resend"  # refused only because another event failed the batch: resend now
    RETRY = "retry"  # outage, timeout: back off, then resend; counts toward max_attempts
    WAIT = "wait"  # throttled, quota: wait as told, then resend; no attempt counted
    REJECTED = "rejected"  # the platform will never take it: dead-letter with the reason
    AUTH = "auth"  # credentials, permissions or the address are wrong: pause the destination


@dataclass(frozen=True)
class EventResult:
    """The verdict on one event, with the platform's reason when it is not delivered."""

    verdict: Verdict
    reason: str = ""


DELIVERED = EventResult(Verdict.DELIVERED)  # shared: results are immutable


@dataclass
class Outcome:
    """The verdicts on one batch, in request order, plus what the response said overall."""

    results: list[EventResult]
    status: int | None = None
    excerpt: str = ""
    retry_after_s: float | None = None
    throttled: bool = False  # the rate-limit scopes must wait, not only this batch
    block_scopes: list[str] | None = None  # which scope kinds a throttle blocks (None: all)
    warnings: list[str] = field(default_factory=list)
    job_id: str | None = None  # the platform's background job / upload id, when it has one
    job_state: str = ""  # the job's state as first reported
    job_detail: str = ""  # e.g. "line_quantity 9 of source_quantity 10"
    split: bool = False  # the request was too large (413): send each half on its own

    @property
    def all_delivered(self) -> bool:
        """Every event was taken (the common case, checked without grouping verdicts)."""
        return all(r.verdict is Verdict.DELIVERED for r in self.results)

    @classmethod
    def every(cls, n: int, verdict: Verdict, reason: str = "", **kw: object) -> Outcome:
        """The same verdict for all `n` events."""
        return cls([EventResult(verdict, reason)] * n, **kw)  # type: ignore[arg-type]


class Adapter(Protocol):
    """A platform: how to call it and how to read its answer."""

    platform: str

    def limits(self, destination: Destination, table: PlatformSettings) -> list[Limit]:
        """The rate-limit scopes a call for this destination counts against; the first
        one is also the scope of `max_in_flight`."""
        ...

    def build_request(
        self,
        destination: Destination,
        table: PlatformSettings,
        payloads: list[bytes],
        batch_id: str,
    ) -> httpx.Request:
        """One request delivering `payloads` (each one event's stored JSON).

        `batch_id` is stable across resends of the same batch; platforms without
        deduplication use it to label the upload (Yandex `comment`).
        """
        ...

    def parse_response(self, response: httpx.Response, n: int) -> Outcome:
        """Verdicts on the `n` events of the request that got `response`."""
        ...

    def parts(self, payloads: list[bytes]) -> list[list[int]]:
        """The batch's payloads (by index) as the requests that must carry them apart; one
        part (`whole_batch`) unless the platform cannot take them in one request."""
        ...


def whole_batch(payloads: list[bytes]) -> list[list[int]]:
    """`Adapter.parts` of a platform that takes any mix of events in one request."""
    return [list(range(len(payloads)))]


MAX_RETRY_AFTER_S = 7 * 86_400.0  # a longer wait is taken as garbage
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")


def retry_after_s(response: httpx.Response, now_s: float | None = None) -> float | None:
    """`Retry-After` as seconds from now, from delta-seconds or an HTTP date in any zone;
    None when it is absent or cannot be read (then it is ignored)."""
    value = response.headers.get("retry-after", "").strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no zone given, not local time
        when = when.replace(tzinfo=UTC)
    wait = when.timestamp() - (time.time() if now_s is None else now_s)
    return min(max(0.0, wait), MAX_RETRY_AFTER_S)


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when it is not one (HTML error pages, empty)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def excerpt(response: httpx.Response) -> str:
    """The start of a response body, for dead letters and logs."""
    return response.text[:EXCERPT_CHARS]


# 501 Not Implemented, 505 HTTP Version Not Supported: no retry changes them; like a 404,
# the address or the client is wrong, so the destination pauses rather than dead-letters.
NOT_SUPPORTED = (501, 505)


def common_outcome(
    response: httpx.Response, n: int, said: str = "", setting: str = "base_url"
) -> Outcome | None:
    """Verdicts every platform shares (throttling, outages, auth); None if none applies.
    `said` (the platform's own words, as ": ...") ends each reason; a wrong-URL answer's
    reason names `setting`."""
    status, kw = (
        response.status_code,
        {"status": response.status_code, "excerpt": excerpt(response)},
    )
    wait = retry_after_s(response)
    if status in (420, 429):
        reason = f"throttled ({status}){said}"
        return Outcome.every(n, Verdict.WAIT, reason, retry_after_s=wait, throttled=True, **kw)
    if status == 503 and wait is not None:  # the platform said when: planned, not a failure
        reason = f"platform unavailable (503){said}"
        return Outcome.every(n, Verdict.WAIT, reason, retry_after_s=wait, **kw)
    if status in (408, 425) or (status >= 500 and status not in NOT_SUPPORTED):
        reason = f"platform unavailable ({status}){said}"
        return Outcome.every(n, Verdict.RETRY, reason, retry_after_s=wait, **kw)
    if status in (401, 403):
        return Outcome.every(n, Verdict.AUTH, f"credentials refused ({status}){said}", **kw)
    if status in (404, 410, *NOT_SUPPORTED) or 300 <= status < 400:
        where = response.headers.get("location", "")
        reason = f"configuration: the platform answered {status} {where}".strip()
        reason += f"; check {setting} and the account{said}"
        return Outcome.every(n, Verdict.AUTH, reason, **kw)
    if status == 413:
        return Outcome.every(n, Verdict.RETRY, f"request too large (413){said}", split=True, **kw)
    if status == 409:  # a conflict with what the platform holds: it has these already
        outcome = Outcome.every(n, Verdict.DELIVERED, "", **kw)
        outcome.warnings.append(f"the platform answered 409 (already there): {kw['excerpt']}")
        return outcome
    return None


def transport_outcome(error: httpx.HTTPError, n: int) -> Outcome:
    """A timeout or connection failure: nothing is known, so every event is retried."""
    return Outcome.every(n, Verdict.RETRY, f"{type(error).__name__} talking to the platform")


def adapter_error_outcome(error: Exception, n: int) -> Outcome:
    """The adapter could not read the answer: retry, with an attempt counted."""
    return Outcome.every(n, Verdict.RETRY, f"could not read the answer: {type(error).__name__}")


@dataclass(frozen=True)
class JobState:
    """What the platform says of a background job (an import, an upload) now."""

    state: str  # the platform's own word: pending, PROCESSED, LINKAGE_FAILURE...
    finished: bool  # no further change is expected
    failed: bool  # finished, and the events were not (all) taken
    detail: str = ""


@runtime_checkable
class JobAdapter(Adapter, Protocol):
    """A platform whose acceptance starts a background job that must be followed."""

    can_look_up: bool  # lookup_request can tell whether a batch already arrived
    listing_has_detail: bool  # parse_list's states carry the detail a finished job needs

    def poll_limits(self, destination: Destination, table: PlatformSettings) -> list[Limit]:
        """The rate-limit scopes a job poll or listing counts against."""
        ...

    def list_request(self, destination: Destination, table: PlatformSettings) -> httpx.Request:
        """A request listing the destination's recent jobs with their states."""
        ...

    def parse_list(self, response: httpx.Response) -> dict[str, JobState]:
        """Job id -> state of the jobs the listing shows (raises if it cannot be read)."""
        ...

    def job_request(
        self, destination: Destination, table: PlatformSettings, job_id: str
    ) -> httpx.Request:
        """A request for the current state of one job."""
        ...

    def parse_job(self, response: httpx.Response) -> JobState:
        """The job's state from the answer to `job_request`."""
        ...

    def lookup_request(
        self, destination: Destination, table: PlatformSettings, batch_id: str
    ) -> httpx.Request | None:
        """A request listing recent jobs, to learn whether a batch whose outcome was never
        seen (timeout, crash after sending) already reached the platform; None if the
        platform offers no way to tell."""
        ...

    def parse_lookup(self, response: httpx.Response, batch_id: str) -> str | None:
        """The job id of an earlier send of `batch_id`, or None if there was none."""
        ...


_FOLLOWS_JOBS: dict[type, bool] = {}


def follows_jobs(adapter: Adapter) -> TypeGuard[JobAdapter]:
    """Whether `adapter` is a `JobAdapter`, decided once per adapter class: a Protocol
    `isinstance` costs ~16 µs, and a small drain asked it up to four times."""
    kind = type(adapter)
    if kind not in _FOLLOWS_JOBS:
        _FOLLOWS_JOBS[kind] = isinstance(adapter, JobAdapter)
    return _FOLLOWS_JOBS[kind]
