"""Yandex Metrica offline conversions: one CSV upload per batch, then a job to follow.

Docs: seed 002 (https://yandex.com/dev/metrika/en/management/openapi/offline_conversions/upload_1)
and the Yandex section of PLATFORMS.md. An upload is accepted at once and processed later
(statuses PREPARED, UPLOADED, EXPORTED, MATCHED, then PROCESSED or LINKAGE_FAILURE), so the
adapter is a `JobAdapter`. Yandex does not deduplicate: every upload carries the batch id as
its `comment`, and `parse_lookup` finds an earlier send of a batch by it.
Quotas: 5,000 requests/day and 3 in parallel per user (token), 30 requests/s per IP.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from dispatcher.settings import Destination, PlatformSettings, YandexSettings
from workers.adapters.base import (
    JobState,
    Outcome,
    Verdict,
    common_outcome,
    excerpt,
    json_body,
    retry_after_s,
)
from workers.limiter import Limit

# Column order of the CSV file; only the columns some row fills are written.
COLUMNS = ("ClientId", "UserId", "Yclid", "PurchaseId", "Target", "DateTime", "Price", "Currency")
SHORT_QUOTA_WAIT_S = 1.0  # the per-IP and parallel quotas free up within about a second


class YandexAdapter:
    """Builds CSV uploads, reads Yandex's answers and follows the uploads it accepted."""

    platform = "yandex"
    can_look_up = True
    listing_has_detail = True

    def limits(self, destination: Destination, table: PlatformSettings) -> list[Limit]:
        assert isinstance(table, YandexSettings)
        user = f"user:{destination.fingerprint()}"
        ip_burst = max(1, int(table.ip_rate_per_s))
        # The user (token) scope comes first: it is also the scope of the 3-parallel cap.
        return [
            Limit(self.platform, user, table.rate_per_min, table.burst),
            Limit(self.platform, "ip", table.ip_rate_per_s * 60, burst=ip_burst),
        ]

    def parts(self, payloads: list[bytes]) -> list[list[int]]:
        """Rows apart by the columns they fill: each upload's rows fill every column of its
        header (the docs define an optional `Price` or `Currency` by its format, never an
        empty cell), so a batch of priced and unpriced rows goes as two uploads."""
        by_columns: dict[frozenset[str], list[int]] = {}
        for i, payload in enumerate(payloads):
            by_columns.setdefault(frozenset(json.loads(payload)), []).append(i)
        return list(by_columns.values())

    def build_request(
        self,
        destination: Destination,
        table: PlatformSettings,
        payloads: list[bytes],
        batch_id: str,
    ) -> httpx.Request:
        return httpx.Request(
            "POST",
            f"{_counter_url(destination, table)}/offline_conversions/upload",
            params={"client_id_type": destination.client_id_type, "comment": batch_id},
            headers=_auth(destination),
            files={"file": ("data.csv", to_csv(payloads), "text/csv")},
            extensions=_timeout(table),
        )

    def parse_response(self, response: httpx.Response, n: int) -> Outcome:
        status, body = response.status_code, json_body(response)
        kw: dict[str, Any] = {"status": status, "excerpt": excerpt(response)}
        if 200 <= status < 300:
            return _accepted(body, n, kw)
        kind, message = _error(body)
        if status in (420, 429):  # the English docs say 420, the Russian 429: alike
            return _quota(response, kind, message, n, kw)
        if status in (401, 403):
            reason = f"credentials refused ({status} {kind or 'unauthorized'}): {message}"
            return Outcome.every(n, Verdict.AUTH, reason[:1000], **kw)
        if status == 404:
            # A wrong counter id is a configuration error: pause rather than drop everything.
            reason = f"configuration: counter not found (404 {kind or 'not_found'}): {message}"
            return Outcome.every(n, Verdict.AUTH, reason[:1000], **kw)
        shared = common_outcome(response, n)
        if shared is not None:
            return shared
        reason = f"{status} {kind or 'error'}: {message or response.text}"
        return Outcome.every(n, Verdict.REJECTED, reason[:1000], **kw)

    def job_request(
        self, destination: Destination, table: PlatformSettings, job_id: str
    ) -> httpx.Request:
        url = f"{_counter_url(destination, table)}/offline_conversions/uploading/{job_id}"
        return httpx.Request("GET", url, headers=_auth(destination), extensions=_timeout(table))

    def parse_job(self, response: httpx.Response) -> JobState:
        """The upload's status.

        Raises:
            httpx.HTTPStatusError: Yandex answered with an error other than 404, so nothing
                is known; the job tracker polls again later.
        """
        if response.status_code == 404:
            # The rows may well have been processed: stop following, dead-letter nothing.
            detail = "Yandex no longer knows this upload (404); its rows may have been processed"
            return JobState("NOT_FOUND", finished=True, failed=False, detail=detail)
        uploading = json_body(response).get("uploading")
        if response.status_code != 200 or not isinstance(uploading, dict):
            raise _unknown(response, "polling an upload")
        return _job_state(uploading)

    def poll_limits(self, destination: Destination, table: PlatformSettings) -> list[Limit]:
        return self.limits(destination, table)  # Yandex's quotas count every request

    def list_request(self, destination: Destination, table: PlatformSettings) -> httpx.Request:
        url = f"{_counter_url(destination, table)}/offline_conversions/uploadings"
        return httpx.Request("GET", url, headers=_auth(destination), extensions=_timeout(table))

    def parse_list(self, response: httpx.Response) -> dict[str, JobState]:
        uploadings = json_body(response).get("uploadings")
        if response.status_code != 200 or not isinstance(uploadings, list):
            raise _unknown(response, "listing uploads")
        return {
            str(u["id"]): _job_state(u) for u in uploadings if isinstance(u, dict) and "id" in u
        }

    def lookup_request(
        self, destination: Destination, table: PlatformSettings, batch_id: str
    ) -> httpx.Request | None:
        return self.list_request(destination, table)

    def parse_lookup(self, response: httpx.Response, batch_id: str) -> str | None:
        """The id of the upload whose `comment` is `batch_id`, or None.

        Raises:
            httpx.HTTPStatusError: The list could not be read, so the batch's fate is still
                unknown (the engine must not take that for "never arrived").
        """
        uploadings = json_body(response).get("uploadings")
        if response.status_code != 200 or not isinstance(uploadings, list):
            raise _unknown(response, "listing uploads")
        for uploading in uploadings:
            if isinstance(uploading, dict) and uploading.get("comment") == batch_id:
                return str(uploading["id"])
        return None


def to_csv(payloads: list[bytes]) -> bytes:
    """The UTF-8 CSV file of the stored rows: a header, then one line per row, in order
    (the engine sends rows of one column set together: `YandexAdapter.parts`)."""
    rows = [json.loads(payload) for payload in payloads]
    present = {column for row in rows for column in row}
    columns = [column for column in COLUMNS if column in present]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def seconds_to_utc_midnight(now: datetime | None = None) -> float:
    """Seconds until the next 00:00 UTC, when Yandex resets the daily per-user quota."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def _quota(
    response: httpx.Response, kind: str, message: str, n: int, kw: dict[str, Any]
) -> Outcome:
    """Which quota ran out decides how long to wait and which scopes every worker blocks."""
    scopes: list[str] | None
    if kind == "quota_requests_by_uid":
        wait_s, scopes = seconds_to_utc_midnight(), ["user"]
    elif kind == "quota_requests_by_ip":
        wait_s, scopes = SHORT_QUOTA_WAIT_S, ["ip"]
    elif kind == "quota_parallel_requests":
        wait_s, scopes = SHORT_QUOTA_WAIT_S, ["user"]
    else:  # an undocumented quota: block everything briefly, as for any 429
        wait_s, scopes = SHORT_QUOTA_WAIT_S, None
    header = retry_after_s(response)
    reason = f"quota exceeded ({response.status_code} {kind or 'unknown'}): {message}"
    return Outcome.every(
        n,
        Verdict.WAIT,
        reason[:1000],
        retry_after_s=wait_s if header is None else header,
        throttled=True,
        block_scopes=scopes,
        **kw,
    )


def _accepted(body: dict[str, Any], n: int, kw: dict[str, Any]) -> Outcome:
    uploading = body.get("uploading")
    if not isinstance(uploading, dict) or "id" not in uploading:
        outcome = Outcome.every(n, Verdict.DELIVERED, **kw)
        outcome.warnings.append("Yandex accepted an upload but named no uploading id")
        return outcome
    outcome = Outcome.every(
        n,
        Verdict.DELIVERED,
        job_id=str(uploading["id"]),
        job_state=str(uploading.get("status", "")),
        job_detail=_quantities(uploading),
        **kw,
    )
    lines, source = uploading.get("line_quantity"), uploading.get("source_quantity")
    if isinstance(lines, int) and isinstance(source, int) and lines < source:
        outcome.warnings.append(
            f"Yandex rejected {source - lines} of {source} rows of upload {uploading['id']} "
            f"({_quantities(uploading)})"
        )
    return outcome


def _job_state(uploading: dict[str, Any]) -> JobState:
    state = str(uploading.get("status", ""))
    detail = _quantities(uploading)
    if state == "PROCESSED":
        return JobState(state, finished=True, failed=False, detail=detail)
    if state == "LINKAGE_FAILURE":
        return JobState(state, finished=True, failed=True, detail=detail)
    # PREPARED, UPLOADED, EXPORTED, MATCHED, or a status newer than this adapter: wait.
    return JobState(state, finished=False, failed=False, detail=detail)


def _quantities(uploading: dict[str, Any]) -> str:
    lines, source = uploading.get("line_quantity"), uploading.get("source_quantity")
    return f"line_quantity {lines} of source_quantity {source}"


def _counter_url(destination: Destination, table: PlatformSettings) -> str:
    return f"{table.base_url.rstrip('/')}/management/v1/counter/{destination.counter_id}"


def _auth(destination: Destination) -> dict[str, str]:
    return {"Authorization": f"OAuth {destination.secret()}"}


def _timeout(table: PlatformSettings) -> dict[str, Any]:
    # The workers' shared client has the longest timeout of all platforms; this one's wins.
    return {"timeout": httpx.Timeout(table.timeout_s).as_dict()}


def _error(body: dict[str, Any]) -> tuple[str, str]:
    """Yandex's `error_type` and message from `{"errors": [{...}], "code", "message"}`."""
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else {}
    first = first if isinstance(first, dict) else {}
    kind = str(first.get("error_type", ""))
    message = str(first.get("message") or body.get("message") or "")
    return kind, message


def _unknown(response: httpx.Response, doing: str) -> httpx.HTTPStatusError:
    # An httpx.HTTPError: the job tracker and the engine already treat those as "unknown".
    message = f"Yandex answered {response.status_code} {doing}: {excerpt(response)[:200]}"
    return httpx.HTTPStatusError(message, request=response.request, response=response)


ADAPTER = YandexAdapter()
