"""vNative (now Trackier) conversion import: `POST /advertiser/conversion-import`, then a job.

Docs: seed 000; Trackier's v1 API docs (formerly vNative) for the jobs API and the
application error codes. The base URL is the `vnative.base_url` setting because the
vendor renamed itself. Batch size and rate limit are undocumented (settings).

An accepted import answers `{"success": true, "data": {"job": {"_id", "state"...}}}`; the
conversions are imported later, so the engine records the job and `workers.jobs` follows
it with `GET /jobs/{id}` until it is completed (logs such as `Total Processed: 2 |
Imported: 0 | Edited: 2 | Errors: 0`) or failed (its events are then dead-lettered).

Where the error code sits in an error body is undocumented, so `app_error` looks in the
body, in `error`/`errors` (object or list) and in `data`. Codes, then HTTP statuses:

| code | meaning | verdict |
|---|---|---|
| 5, 12, 13 | insufficient permission, unauthorized, invalid API key | AUTH |
| 41, 42 | IP not whitelisted, account locked | AUTH (the reason says which) |
| 31, 32 | resource not found, invalid request method | AUTH-style pause (wrong URL) |
| 20, 30, 11, 60 | parameter error, bad request, not allowed, illegal | REJECTED, with the message |
| 33 | duplicated resource | DELIVERED: these conversions were imported before |
| 40 | too many requests | WAIT, throttled (no attempt counted) |
| 50, 51 | system upgrade, server error | RETRY |

Without a code, HTTP statuses as on every platform (`base.common_outcome`): 401/403 ->
AUTH; 404, 410, 501, 505 and 3xx -> pause "check vnative.base_url" (a wrong base URL must
not dead-letter everything); 420/429 -> WAIT, throttled; 5xx -> RETRY; 409 -> DELIVERED
with a warning; 413 -> split; another 4xx -> REJECTED.
A job poll answered with vNative's own 404 (code 31) ends the job as finished, nothing
dead-lettered (the import may have run; vNative keeps only its latest jobs).

Double counting: vNative has no deduplication id and its jobs carry no label we set.
When a call's outcome is unknown (a timeout after sending), `parse_lookup` cannot tell
whether the batch was queued, so it answers None and the batch is sent again; vNative
may then count it twice (its logs' "Edited" count suggests a known click is updated,
not added again; unconfirmed). Recognising the job would need the batch size and the
time of the first send, which the engine does not pass, and even then a job still
pending shows no processed count in `GET /jobs`.
"""

from __future__ import annotations

import re
from typing import Any, cast
from urllib.parse import quote

import httpx

from dispatcher.settings import Destination, PlatformSettings
from workers.adapters.base import (
    JobState,
    Outcome,
    Verdict,
    common_outcome,
    endpoint,
    excerpt,
    json_body,
    retry_after_s,
    whole_batch,
)
from workers.limiter import Limit

_AUTH = {5: "insufficient permission", 12: "unauthorized request", 13: "invalid API key"}
_AUTH |= {41: "request IP not whitelisted", 42: "account is locked"}
_WRONG_URL = {31: "resource not found", 32: "invalid request method"}
_REJECTED = {20: "parameter error", 30: "bad request", 11: "operation not allowed"}
_REJECTED |= {60: "illegal operation"}
_RETRY = {50: "system upgrade", 51: "server error"}
_TOTALS = re.compile(r"Total Processed:\s*(\d+)")
_ERRORS = re.compile(r"Errors:\s*(\d+)")


def _job(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`data` and `data.job` of an answer, empty where absent."""
    data = body.get("data")
    data = data if isinstance(data, dict) else {}
    job = data.get("job")
    return data, job if isinstance(job, dict) else {}


def _dicts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body and every object it nests under `error`, `errors` or `data`."""
    found = [body]
    for key in ("error", "errors", "data"):
        value = body.get(key)
        found += [value] if isinstance(value, dict) else []
        found += [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
    return found


def app_error(body: dict[str, Any]) -> tuple[int | None, str]:
    """vNative's application error code (None if none) and message, wherever they sit."""
    code: int | None = None
    message = ""
    for place in _dicts(body):
        for key in ("code", "errorCode", "error_code"):
            raw = place.get(key)
            if code is None and isinstance(raw, int | str) and str(raw).strip().isdigit():
                code = int(str(raw).strip()) or None  # 0 means success
        for key in ("message", "msg", "error", "errors"):
            if not message and isinstance(place.get(key), str):
                message = place[key]
    return code, message


def _headers(destination: Destination) -> dict[str, str]:
    return {"X-Api-Key": destination.secret(), "Accept": "application/json"}


class VNativeAdapter:
    """Builds conversion-import calls and follows the import jobs they start."""

    platform = "vnative"
    parts = staticmethod(whole_batch)  # any mix of events goes in one request
    can_look_up = False
    listing_has_detail = False  # the listing has states, not the logs a finished job shows

    def limits(self, destination: Destination, table: PlatformSettings) -> list[Limit]:
        # vNative documents no limit; we count calls per API key (the `key:` scope).
        scope = f"key:{destination.fingerprint()}"
        return [Limit(self.platform, scope, table.rate_per_min, table.burst)]

    def build_request(
        self,
        destination: Destination,
        table: PlatformSettings,
        payloads: list[bytes],
        batch_id: str,
    ) -> httpx.Request:
        postback = b"true" if destination.send_postback else b"false"
        body = b'{"conversions":[' + b",".join(payloads) + b'],"send_postback":' + postback + b"}"
        return httpx.Request(
            "POST",
            endpoint(table.base_url, "/advertiser/conversion-import"),
            headers={**_headers(destination), "Content-Type": "application/json"},
            content=body,
        )

    def parse_response(self, response: httpx.Response, n: int) -> Outcome:
        body, status = json_body(response), response.status_code
        kw: dict[str, Any] = {"status": status, "excerpt": excerpt(response)}
        if 200 <= status < 300 and body.get("success") is True:
            return _queued(body, n, kw)
        code, message = app_error(body)
        said = f": {message}" if message else ""
        if status in (420, 429) or (status == 503 and retry_after_s(response) is not None):
            # throttled, or down for a time it names (code 50, 51 too): no attempt counted
            return cast(Outcome, common_outcome(response, n, said, "vnative.base_url"))
        if code in _AUTH:
            return Outcome.every(n, Verdict.AUTH, f"{_AUTH[code]} (code {code}){said}", **kw)
        if code in _WRONG_URL:
            reason = f"{_WRONG_URL[code]} (code {code}): check vnative.base_url{said}"
            return Outcome.every(n, Verdict.AUTH, reason, **kw)
        if code in _REJECTED:
            reason = f"{_REJECTED[code]} (code {code}){said}"[:1000]
            return Outcome.every(n, Verdict.REJECTED, reason, **kw)
        if code == 33:
            # The platform already holds these conversions: sending them again cannot help.
            warning = f"duplicated resource (code 33): already imported{said}"
            return Outcome.every(n, Verdict.DELIVERED, warnings=[warning], **kw)
        wait_s = retry_after_s(response)
        if code == 40:
            return Outcome.every(
                n, Verdict.WAIT, "too many requests (code 40)", retry_after_s=wait_s,
                throttled=True, **kw,
            )  # fmt: skip
        if code in _RETRY:
            reason = f"{_RETRY[code]} (code {code}){said}"
            return Outcome.every(n, Verdict.RETRY, reason, retry_after_s=wait_s, **kw)
        shared = common_outcome(response, n, said, "vnative.base_url")
        if shared is not None:
            return shared
        if 400 <= status < 500:
            return Outcome.every(n, Verdict.REJECTED, f"refused ({status}){said}"[:1000], **kw)
        # A 2xx that is not `success: true` and names no code: nothing is known, so retry
        # (max_attempts dead-letters it if it never changes).
        return Outcome.every(n, Verdict.RETRY, f"unrecognised answer ({status}){said}", **kw)

    def job_request(
        self, destination: Destination, table: PlatformSettings, job_id: str
    ) -> httpx.Request:
        url = f"{table.base_url.rstrip('/')}/jobs/{quote(job_id, safe='')}"
        return httpx.Request("GET", url, headers=_headers(destination))

    def parse_job(self, response: httpx.Response) -> JobState:
        body = json_body(response)
        if (
            response.status_code == 404
            and body.get("success") is False
            and app_error(body)[0] == 31
        ):
            # vNative's own "resource not found" for a job it no longer keeps (`GET /jobs`
            # lists the latest 50): the import may well have run. Stop following it and
            # dead-letter nothing, as for Yandex. Another 404 (a proxy's, a wrong base
            # URL's) says nothing of the job: it stays open.
            detail = "vNative no longer knows this job (404); its conversions may be imported"
            return JobState("not_found", finished=True, failed=False, detail=detail)
        if response.status_code != 200 or body.get("success") is not True:
            code, message = app_error(body)
            said = f" (code {code})" if code else ""
            detail = f"poll answered {response.status_code}{said}: {message or excerpt(response)}"
            return JobState("unknown", finished=False, failed=False, detail=detail[:500])
        data, job = _job(body)
        # The import answer says "state"; the jobs API's sample says "status".
        state = str(job.get("status") or job.get("state") or "unknown").lower()
        summary = job_summary(data.get("logs") or job.get("logs"))
        if state == "completed":
            errors, total = _ERRORS.search(summary), _TOTALS.search(summary)
            if errors and total and int(errors.group(1)) >= int(total.group(1)) > 0:
                # Every conversion of the import had an error: none of them counted.
                detail = f"{summary} (every conversion had errors)"
                return JobState(state, finished=True, failed=True, detail=detail)
            if errors and int(errors.group(1)) > 0:
                summary += f" ({errors.group(1)} conversion(s) had errors; vNative names none)"
            return JobState(state, finished=True, failed=False, detail=summary)
        if state == "failed":
            return JobState(state, finished=True, failed=True, detail=summary or "no logs")
        return JobState(state, finished=False, failed=False, detail=summary)

    def poll_limits(self, destination: Destination, table: PlatformSettings) -> list[Limit]:
        # Reads of the jobs API; vNative documents no limit: a budget of their own.
        rate = float(getattr(table, "poll_rate_per_min", 6000.0))
        return [Limit(self.platform, f"poll:{destination.fingerprint()}", rate, burst=20)]

    def list_request(self, destination: Destination, table: PlatformSettings) -> httpx.Request:
        return httpx.Request(
            "GET", f"{table.base_url.rstrip('/')}/jobs", headers=_headers(destination)
        )

    def parse_list(self, response: httpx.Response) -> dict[str, JobState]:
        body = json_body(response)
        data = body.get("data")
        listed = data.get("jobs") if isinstance(data, dict) else None
        if response.status_code != 200 or not isinstance(listed, list):
            raise ValueError(f"vNative answered {response.status_code} listing jobs")
        states = {}
        for job in listed:
            if isinstance(job, dict) and (job_id := job.get("_id") or job.get("id")):
                state = str(job.get("status") or job.get("state") or "unknown").lower()
                done = state in ("completed", "failed")
                states[str(job_id)] = JobState(state, finished=done, failed=state == "failed")
        return states

    def lookup_request(
        self, destination: Destination, table: PlatformSettings, batch_id: str
    ) -> httpx.Request | None:
        # `GET /jobs` lists the latest 50 jobs, but they carry no label of ours, so none
        # can be tied to this batch (see the module docstring): "can't tell", and the
        # engine resends rather than risk losing the batch.
        return None

    def parse_lookup(self, response: httpx.Response, batch_id: str) -> str | None:
        return None


def _queued(body: dict[str, Any], n: int, kw: dict[str, Any]) -> Outcome:
    data, job = _job(body)
    job_id = job.get("_id") or job.get("id")
    if not job_id:
        warning = "vNative queued the import but named no job: it cannot be followed"
        return Outcome.every(n, Verdict.DELIVERED, warnings=[warning], **kw)
    state = str(job.get("state") or job.get("status") or "")
    detail = str(data.get("message") or "")
    return Outcome.every(
        n, Verdict.DELIVERED, job_id=str(job_id), job_state=state, job_detail=detail, **kw
    )


def _log_lines(logs: object) -> list[str]:
    if not isinstance(logs, list):
        return []
    lines = [log.get("message") if isinstance(log, dict) else log for log in logs]
    return [line for line in lines if isinstance(line, str) and line]


def job_summary(logs: object) -> str:
    """The most telling line of a job's logs (strings or `{"message"}` objects): the
    "Total Processed" line with the highest count, else all lines joined."""
    lines = _log_lines(logs)
    totals = [(int(m.group(1)), line) for line in lines if (m := _TOTALS.search(line))]
    if totals:
        return max(totals, key=lambda pair: pair[0])[1]
    return "; ".join(lines)[:500]


ADAPTER = VNativeAdapter()
