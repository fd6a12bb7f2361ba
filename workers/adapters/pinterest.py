"""Pinterest Conversions API v5: `POST /v5/ad_accounts/{ad_account_id}/events`.

Docs: seed 001 and Pinterest's contract v5.23.0
(https://developers.pinterest.com/docs/api/v5/events-create).
Batch size: up to 1000 events. Rate-limit scope: the ad account (5,000 calls/min).
Results are per event, in request order, from a 200 (`events`) or a 422 (`details.events`).
"""

from __future__ import annotations

from typing import Any

import httpx

from dispatcher.settings import Destination, PinterestSettings, PlatformSettings
from workers.adapters.base import (
    DELIVERED,
    EventResult,
    Outcome,
    Verdict,
    common_outcome,
    endpoint,
    excerpt,
    json_body,
    whole_batch,
)
from workers.limiter import Limit

MAX_WARNING_INDICES = 10  # a warning names at most this many events (a batch holds 1000)


class PinterestAdapter:
    """Builds Send conversions calls and reads Pinterest's per-event answers."""

    platform = "pinterest"
    parts = staticmethod(whole_batch)  # any mix of events goes in one request

    def limits(self, destination: Destination, table: PlatformSettings) -> list[Limit]:
        # Pinterest limits calls per ad account, whichever token makes them (seed 001),
        # and per user (token): 100/s, test calls 10/s (the rate-limits page).
        assert isinstance(table, PinterestSettings)
        account = f"account:{destination.ad_account_id}"
        per_s = table.test_rate_per_s if destination.test else table.user_rate_per_s
        user = f"user:{destination.fingerprint()}" + (":test" if destination.test else "")
        return [
            Limit(self.platform, account, table.rate_per_min, table.burst),
            Limit(self.platform, user, per_s * 60, burst=max(1, int(per_s))),
        ]

    def build_request(
        self,
        destination: Destination,
        table: PlatformSettings,
        payloads: list[bytes],
        batch_id: str,
    ) -> httpx.Request:
        assert destination.ad_account_id is not None  # Destination requires it for pinterest
        url = endpoint(table.base_url, f"/v5/ad_accounts/{destination.ad_account_id}/events")
        return httpx.Request(
            "POST",
            url,
            params={"test": "true"} if destination.test else None,
            headers={
                "Authorization": f"Bearer {destination.secret()}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            # The stored payloads already are the events' JSON: joined, never re-parsed.
            content=b'{"data":[' + b",".join(payloads) + b"]}",
        )

    def parse_response(self, response: httpx.Response, n: int) -> Outcome:
        status, body = response.status_code, json_body(response)
        if 200 <= status < 300:
            return _per_event(body.get("events"), n, response)
        if status == 422:
            details = body.get("details")
            events = details.get("events") if isinstance(details, dict) else None
            return _per_event(events, n, response)
        message = _message(body, response)
        kw: dict[str, Any] = {"status": status, "excerpt": excerpt(response)}
        if status in (401, 403):
            return Outcome.every(n, Verdict.AUTH, f"{message} ({status})", **kw)
        shared = common_outcome(response, n)
        if shared is not None:  # 429 (throttled, Retry-After honoured), 503 (code 4197), 5xx
            if shared.throttled:  # the ad account's limit: other accounts of the token go on
                shared.block_scopes = ["account"]
            if n:
                first = shared.results[0]
                shared.results = [
                    EventResult(first.verdict, f"{first.reason}: {message}"[:1000])
                ] * n
            return shared
        # 400 (code 4196) and anything else: the request as sent will never be taken.
        return Outcome.every(n, Verdict.REJECTED, f"{status}: {message}"[:1000], **kw)


def _message(body: dict[str, Any], response: httpx.Response) -> str:
    """Pinterest's `message` (with its `code`), else the start of the body."""
    message, code = body.get("message"), body.get("code")
    if not isinstance(message, str):
        return response.text[:200]
    return f"code {code}: {message}" if code is not None else message


def _per_event(events: object, n: int, response: httpx.Response) -> Outcome:
    """Verdicts from Pinterest's `events` array (request order), with its warnings."""
    status, text = response.status_code, excerpt(response)
    if not isinstance(events, list) or len(events) != n:
        processed = json_body(response).get("num_events_processed")
        short = type(processed) is int and processed < n
        listed = events if isinstance(events, list) else []
        failed = any(  # a failure that cannot be matched to its event
            not isinstance(e, dict) or e.get("status") != "processed" for e in listed
        )
        if 200 <= status < 300 and not short and not failed:
            # Taken as a whole; Pinterest just did not itemise it.
            given = len(listed)
            odd = [f"{status} with {given} per-event results for {n} events"] if given else []
            return Outcome.every(n, Verdict.DELIVERED, status=status, warnings=odd)
        # Not all were processed and nothing says which: refuse them all, for an operator
        # to replay (event_id deduplicates the ones that did get through, offline events
        # aside).
        said = (
            f"{processed} of {n} processed"
            if short
            else f"{len(listed)} results for {n} events, some not processed"
            if failed
            else _message(json_body(response), response)
        )
        reason = f"{status} without per-event results: {said}"
        return Outcome.every(n, Verdict.REJECTED, reason[:1000], status=status, excerpt=text)
    results: list[EventResult] = []
    warned: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        item = event if isinstance(event, dict) else {}
        warning = item.get("warning_message")
        if isinstance(warning, str) and warning:
            warned.setdefault(warning, []).append(index)
        if item.get("status") == "processed":
            results.append(DELIVERED)
        else:
            error = item.get("error_message") or f"status {item.get('status')!r}"
            results.append(EventResult(Verdict.REJECTED, f"{status}: {error}"[:1000]))
    return Outcome(results, status=status, excerpt=text, warnings=_warnings(warned, n))


def _warnings(warned: dict[str, list[int]], n: int) -> list[str]:
    """One line per distinct warning, naming the events it concerns (logs stay short)."""
    lines = []
    for message, indices in warned.items():
        shown = ", ".join(str(i) for i in indices[:MAX_WARNING_INDICES])
        more = (
            f" and {len(indices) - MAX_WARNING_INDICES} more"
            if len(indices) > MAX_WARNING_INDICES
            else ""
        )
        lines.append(f"{message} (events {shown}{more} of {n})")
    return lines


ADAPTER = PinterestAdapter()
