"""What every platform shares: Retry-After, and the whole-request statuses."""

from __future__ import annotations

import httpx
import pytest

from workers.adapters import Verdict
from workers.adapters.base import common_outcome, retry_after_s
from workers.adapters.linkedin import ADAPTER as LINKEDIN


def answer(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", "http://platform.test/")
    raw = [(k.encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return httpx.Response(status, headers=raw, request=request)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("1.5", 1.5),
        ("\u00b2", None),  # isdigit() is true for a superscript two; it is not a number
        ("-3", None),
        ("soon", None),
        ("", None),
        ("Mon, 32 Foo 2026 99:99:99 GMT", None),
        ("99999999999999999999", None),
    ],
)
def test_retry_after_reads_seconds_and_ignores_garbage(header: str, expected: float | None) -> None:
    assert retry_after_s(answer(429, {"Retry-After": header})) == expected


def test_retry_after_dates_in_any_zone_are_read_as_that_zone() -> None:
    now = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
    utc = answer(429, {"Retry-After": "Fri, 15 Jan 2027 08:00:30 GMT"})
    minus_zero = answer(429, {"Retry-After": "Fri, 15 Jan 2027 08:00:30 -0000"})
    plus_one = answer(429, {"Retry-After": "Fri, 15 Jan 2027 09:00:30 +0100"})
    assert retry_after_s(utc, now) == pytest.approx(30)
    assert retry_after_s(minus_zero, now) == pytest.approx(30)
    assert retry_after_s(plus_one, now) == pytest.approx(30)


def test_throttling_and_announced_outages_wait_without_counting_an_attempt() -> None:
    for status in (429, 420):
        outcome = common_outcome(answer(status), 2)
        assert outcome is not None
        assert {r.verdict for r in outcome.results} == {Verdict.WAIT}
        assert outcome.throttled
    planned = common_outcome(answer(503, {"Retry-After": "30"}), 1)
    assert planned is not None
    assert planned.results[0].verdict is Verdict.WAIT
    assert planned.retry_after_s == 30
    unplanned = common_outcome(answer(503), 1)
    assert unplanned is not None
    assert unplanned.results[0].verdict is Verdict.RETRY


@pytest.mark.parametrize("status", [404, 410, 501, 505, 301, 302, 307, 308])
def test_a_wrong_address_pauses_as_a_configuration_problem(status: int) -> None:
    outcome = common_outcome(answer(status, {"Location": "https://elsewhere.test/"}), 3)
    assert outcome is not None
    assert {r.verdict for r in outcome.results} == {Verdict.AUTH}
    assert outcome.results[0].reason.startswith("configuration:")


def test_413_splits_the_batch_and_409_counts_as_already_there() -> None:
    too_large = common_outcome(answer(413), 4)
    assert too_large is not None
    assert too_large.split
    conflict = common_outcome(answer(409), 2)
    assert conflict is not None
    assert {r.verdict for r in conflict.results} == {Verdict.DELIVERED}
    assert conflict.warnings


def test_linkedin_elements_throttled_or_failing_are_retried_not_rejected() -> None:
    body = {"elements": [{"status": 201}, {"status": 429}, {"status": 503}, {"status": 400}]}
    request = httpx.Request("POST", "http://platform.test/")
    outcome = LINKEDIN.parse_response(httpx.Response(200, json=body, request=request), 4)
    verdicts = [r.verdict for r in outcome.results]
    assert verdicts == [Verdict.DELIVERED, Verdict.WAIT, Verdict.RETRY, Verdict.REJECTED]
