"""LinkedIn Conversions API: `BATCH_CREATE` on /rest/conversionEvents.

Docs: seed 003 (https://learn.microsoft.com/linkedin/marketing/integrations/ads-reporting/conversions-api),
pinned by the `linkedin.version` setting (`LinkedIn-Version` header, YYYYMM).
Batch size: up to 5000 events. Rate-limit scope: the member access token.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from dispatcher.settings import LINKEDIN_VERSION, Destination, LinkedInSettings, PlatformSettings
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

# LinkedIn's answer when an event names a deleted or disabled rule (seed 003's error table).
_RULE_OFF = re.compile(r"marked as deleted|conversion enabled should be true", re.IGNORECASE)
_INDEX_GROUP = re.compile(r"Index: (\d+), ")
_BATCH_INDEX = re.compile(r"\{([^{}]*?batchIndex=(\d+)[^{}]*)\}")
_INDICES = re.compile(r"indices \[([\d,\s]+)\]")


class LinkedInAdapter:
    """Builds `BATCH_CREATE` calls and reads LinkedIn's per-element answers."""

    platform = "linkedin"
    parts = staticmethod(whole_batch)  # any mix of events goes in one request

    def limits(self, destination: Destination, table: PlatformSettings) -> list[Limit]:
        # LinkedIn limits calls per member access token.
        token = f"token:{destination.fingerprint()}"
        return [Limit(self.platform, token, table.rate_per_min, table.burst)]

    def build_request(
        self,
        destination: Destination,
        table: PlatformSettings,
        payloads: list[bytes],
        batch_id: str,
    ) -> httpx.Request:
        assert isinstance(table, LinkedInSettings)
        return httpx.Request(
            "POST",
            endpoint(table.base_url, "/rest/conversionEvents"),
            headers={
                "Authorization": f"Bearer {destination.secret()}",
                "LinkedIn-Version": table.version,
                "X-Restli-Protocol-Version": "2.0.0",
                "X-RestLi-Method": "BATCH_CREATE",
                "Content-Type": "application/json",
            },
            content=b'{"elements":[' + b",".join(payloads) + b"]}",
        )

    def parse_response(self, response: httpx.Response, n: int) -> Outcome:
        status = response.status_code
        if 200 <= status < 300:
            return _batch_results(response, n)
        body = json_body(response)
        if status == 401:
            code = body.get("serviceErrorCode")
            why = "access token revoked" if code == 65601 else "access token invalid or expired"
            return Outcome.every(
                n, Verdict.AUTH, f"{why} (401)", status=401, excerpt=excerpt(response)
            )
        if status == 426:
            return Outcome.every(
                n, Verdict.AUTH, version_refused(response), status=426, excerpt=excerpt(response)
            )
        shared = common_outcome(response, n)
        if shared is not None:
            return shared
        return _validation_failure(str(body.get("message") or response.text), status, n, response)


def version_refused(response: httpx.Response) -> str:
    """A 426's reason: the version sent, LinkedIn's words (naming a version if it does) and
    the setting to change."""
    sent = response.request.headers.get("LinkedIn-Version", "?")
    said = str(json_body(response).get("message") or "")[:300]
    return (
        f"LinkedIn refused LinkedIn-Version {sent} (426{': ' + said if said else ''}); "
        f"set linkedin.version (CONVDISP_LINKEDIN__VERSION) to a current YYYYMM version, "
        f"e.g. {LINKEDIN_VERSION}"
    )


def _batch_results(response: httpx.Response, n: int) -> Outcome:
    elements = json_body(response).get("elements")
    status = response.status_code
    if not isinstance(elements, list) or not elements:
        # 201 (single create) or an answer without per-element detail: the call was accepted.
        return Outcome.every(n, Verdict.DELIVERED, status=status)
    if len(elements) != n:
        said = f"{len(elements)} element results for {n} events"
        if all(_created(e) for e in elements):  # taken as a whole, with a warning
            return Outcome.every(n, Verdict.DELIVERED, status=status, warnings=[said])
        # A failure (a 500, a 400) that cannot be matched to its event: the batch is sent
        # again, an attempt counted (eventId deduplicates those already created).
        reason = f"{said}, not all created: sent again"
        return Outcome.every(n, Verdict.RETRY, reason, status=status, excerpt=excerpt(response))
    results = []
    for element in elements:
        code = element.get("status", 201) if isinstance(element, dict) else 201
        if code in (200, 201):
            results.append(DELIVERED)
        elif code == 429:  # this element was throttled, not refused
            results.append(EventResult(Verdict.WAIT, "element status 429"))
        elif isinstance(code, int) and code >= 500:
            results.append(EventResult(Verdict.RETRY, f"element status {code}"))
        else:
            error = element.get("error", {}) if isinstance(element, dict) else {}
            message = error.get("message", "") if isinstance(error, dict) else ""
            results.append(EventResult(Verdict.REJECTED, f"element status {code}: {message}"))
    return Outcome(results, status=response.status_code, excerpt=excerpt(response))


def _created(element: object) -> bool:
    code = element.get("status", 201) if isinstance(element, dict) else 201
    return isinstance(code, int) and 200 <= code < 300


def element_errors(message: str) -> dict[int, str]:
    """LinkedIn's messages naming bad elements, by index (all three observed formats)."""
    found: dict[int, str] = {}
    marks = list(_INDEX_GROUP.finditer(message))
    ends = [m.start() for m in marks[1:]] + [len(message)] if marks else []
    for mark, end in zip(marks, ends, strict=True):
        text = message[mark.end() : end].strip()
        index = int(mark.group(1))
        found[index] = f"{found[index]}\n{text}" if index in found else text
    for match in _BATCH_INDEX.finditer(message):
        index = int(match.group(2))
        found[index] = f"{found[index]}; {match.group(1)}" if index in found else match.group(1)
    for match in _INDICES.finditer(message):
        for index in (int(i) for i in match.group(1).replace(",", " ").split()):
            found.setdefault(index, message)
    return found


def _validation_failure(message: str, status: int, n: int, response: httpx.Response) -> Outcome:
    """A 400/422: reject exactly the named elements; resend the others, which were fine."""
    bad = {i: m for i, m in element_errors(message).items() if 0 <= i < n}
    kw: dict[str, Any] = {"status": status, "excerpt": excerpt(response)}
    if not bad and _RULE_OFF.search(message):
        # A deleted or disabled conversion rule: a configuration problem, as a wrong URL is.
        # Pause (every later batch would be refused alike) rather than dead-letter events
        # that go through once the rule is enabled again and the destination resumed.
        reason = f"configuration: the conversion rule is deleted or disabled ({status}): {message}"
        return Outcome.every(n, Verdict.AUTH, reason[:1000], **kw)
    if not bad:
        # Nothing names an element: the whole call is refused as sent (documented choice).
        return Outcome.every(n, Verdict.REJECTED, f"{status}: {message}"[:1000], **kw)
    results = [
        EventResult(Verdict.REJECTED, f"{status}: {bad[i]}"[:1000])
        if i in bad
        else EventResult(Verdict.RESEND)
        for i in range(n)
    ]
    return Outcome(results, **kw)


ADAPTER = LinkedInAdapter()
