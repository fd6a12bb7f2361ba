"""The Pinterest adapter: request shape and response reading (no I/O; httpx objects only)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from dispatcher import Destination
from dispatcher.settings import PinterestSettings
from workers.adapters import adapter_for
from workers.adapters.base import Verdict
from workers.adapters.pinterest import ADAPTER

ACCOUNT = "549755885175"
DEST = Destination(platform="pinterest", token="secret-token", ad_account_id=ACCOUNT)
TABLE = PinterestSettings(base_url="https://pin.example/", rate_per_min=5000, burst=10)
PAYLOADS = [b'{"event_name":"checkout","event_id":"a"}', b'{"event_name":"lead","event_id":"b"}']


def respond(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


def processed(warning: str | None = None) -> dict[str, Any]:
    return {"status": "processed", "error_message": None, "warning_message": warning}


def failed(message: str) -> dict[str, Any]:
    return {"status": "failed", "error_message": message, "warning_message": None}


def summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    done = sum(e["status"] == "processed" for e in events)
    return {"num_events_received": len(events), "num_events_processed": done, "events": events}


def verdicts(status: int, body: object, n: int = 3, **headers: str) -> list[Verdict]:
    return [r.verdict for r in ADAPTER.parse_response(respond(status, body, headers), n).results]


def test_the_registry_finds_the_adapter_by_platform_name() -> None:
    assert adapter_for("pinterest") is ADAPTER


def test_calls_count_against_the_ad_account_and_the_token() -> None:
    account, user = ADAPTER.limits(DEST, TABLE)
    assert (account.platform, account.scope) == ("pinterest", f"account:{ACCOUNT}")
    assert (account.rate_per_min, account.burst) == (5000, 10)
    assert user.scope == f"user:{DEST.fingerprint()}"
    assert (user.rate_per_min, user.burst) == (100 * 60, 100)


def test_test_calls_have_their_own_budget_of_10_a_second() -> None:
    _, user = ADAPTER.limits(DEST.model_copy(update={"test": True}), TABLE)
    assert user.scope == f"user:{DEST.fingerprint()}:test"
    assert (user.rate_per_min, user.burst) == (10 * 60, 10)


def test_request_posts_the_stored_payloads_as_data_to_the_ad_accounts_events() -> None:
    # Given two stored events
    # When a request is built for them
    request = ADAPTER.build_request(DEST, TABLE, PAYLOADS, "batch-1")
    # Then it is the Send conversions call, with the bytes joined, not re-serialised
    assert request.method == "POST"
    assert str(request.url) == f"https://pin.example/v5/ad_accounts/{ACCOUNT}/events"
    assert request.headers["Authorization"] == "Bearer secret-token"
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == b'{"data":[' + b",".join(PAYLOADS) + b"]}"
    assert json.loads(request.content)["data"][1] == {"event_name": "lead", "event_id": "b"}


def test_a_test_destination_adds_test_true() -> None:
    test_dest = DEST.model_copy(update={"test": True})
    request = ADAPTER.build_request(test_dest, TABLE, PAYLOADS, "batch-1")
    assert request.url.params["test"] == "true"
    assert "test" not in ADAPTER.build_request(DEST, TABLE, PAYLOADS, "b").url.params


def test_a_200_is_read_event_by_event_in_request_order() -> None:
    # Given Pinterest processed events 0 and 2 and failed event 1
    body = summary([processed(), failed("event_time is too old"), processed()])
    # When the answer is read
    outcome = ADAPTER.parse_response(respond(200, body), 3)
    # Then 0 and 2 are delivered and 1 is rejected with Pinterest's error_message
    assert [r.verdict for r in outcome.results] == [
        Verdict.DELIVERED,
        Verdict.REJECTED,
        Verdict.DELIVERED,
    ]
    assert "event_time is too old" in outcome.results[1].reason


def test_a_422_is_read_from_details_events() -> None:
    details = summary([failed("event_name: 'purchase' is not one of ..."), processed()])
    body = {
        "code": 953,
        "message": "Not all events were successfully processed.",
        "details": details,
    }
    outcome = ADAPTER.parse_response(respond(422, body), 2)
    assert [r.verdict for r in outcome.results] == [Verdict.REJECTED, Verdict.DELIVERED]
    assert outcome.results[0].reason.startswith("422: event_name: 'purchase'")
    assert outcome.status == 422


def test_warnings_are_collected_once_per_message_naming_the_events() -> None:
    # Given 12 events processed with the same warning and one with another
    events = [processed("no hashed email")] * 12 + [processed("odd currency"), processed()]
    # When the answer is read
    outcome = ADAPTER.parse_response(respond(200, summary(events)), 14)
    # Then every event is delivered and each warning appears once, listing its events
    assert {r.verdict for r in outcome.results} == {Verdict.DELIVERED}
    assert outcome.warnings == [
        "no hashed email (events 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more of 14)",
        "odd currency (events 12 of 14)",
    ]


def test_a_200_without_per_event_detail_delivers_all() -> None:
    assert verdicts(200, {"num_events_received": 3}) == [Verdict.DELIVERED] * 3


def test_a_200_that_processed_fewer_than_it_itemised_rejects_all_for_a_replay() -> None:
    # Which ones failed is not said: delivering all would lose them silently.
    body = {"num_events_received": 3, "num_events_processed": 1, "events": [processed()]}
    outcome = ADAPTER.parse_response(respond(200, body), 3)
    assert {r.verdict for r in outcome.results} == {Verdict.REJECTED}
    assert outcome.results[0].reason == "200 without per-event results: 1 of 3 processed"


def test_a_200_with_a_short_list_but_all_processed_delivers_and_warns() -> None:
    body = {"num_events_received": 3, "num_events_processed": 3, "events": [processed()]}
    outcome = ADAPTER.parse_response(respond(200, body), 3)
    assert {r.verdict for r in outcome.results} == {Verdict.DELIVERED}
    assert outcome.warnings == ["200 with 1 per-event results for 3 events"]


def test_a_list_of_another_length_holding_a_failure_rejects_all_for_a_replay() -> None:
    # The failure cannot be matched to its event: no event is taken as delivered
    body = {"events": [processed(), failed("bad email")]}  # no num_events_processed
    outcome = ADAPTER.parse_response(respond(200, body), 3)
    assert {r.verdict for r in outcome.results} == {Verdict.REJECTED}
    assert outcome.results[0].reason == (
        "200 without per-event results: 2 results for 3 events, some not processed"
    )


@pytest.mark.parametrize("status", [201, 204])
def test_any_2xx_is_read_as_a_200(status: int) -> None:
    assert verdicts(status, {"events": [processed(), failed("x"), processed()]}) == [
        Verdict.DELIVERED,
        Verdict.REJECTED,
        Verdict.DELIVERED,
    ]
    assert verdicts(status, None) == [Verdict.DELIVERED] * 3


def test_a_422_without_per_event_detail_rejects_all_with_the_message() -> None:
    outcome = ADAPTER.parse_response(respond(422, {"code": 953, "message": "partial"}), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.REJECTED}
    assert "partial" in outcome.results[0].reason


def test_a_400_rejects_the_whole_request_with_pinterests_message() -> None:
    body = {"code": 4196, "message": "The request was invalid. data: holds 1001 items"}
    outcome = ADAPTER.parse_response(respond(400, body), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.REJECTED}
    assert outcome.results[0].reason == f"400: code 4196: {body['message']}"


@pytest.mark.parametrize(
    ("status", "code"), [(401, 2), (403, 29)], ids=["authentication", "permission"]
)
def test_401_and_403_pause_the_destination(status: int, code: int) -> None:
    outcome = ADAPTER.parse_response(respond(status, {"code": code, "message": "No."}), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.AUTH}
    assert outcome.results[0].reason == f"code {code}: No. ({status})"
    assert "secret-token" not in repr(outcome)


def test_429_is_a_throttle_retried_after_retry_after() -> None:
    body = {"code": 8, "message": "This request exceeded a rate limit."}
    outcome = ADAPTER.parse_response(respond(429, body, {"Retry-After": "7"}), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.WAIT}
    assert outcome.throttled
    assert outcome.retry_after_s == 7.0
    assert "code 8" in outcome.results[0].reason
    assert ADAPTER.parse_response(respond(429, body), 1).retry_after_s is None
    # the ad account waits; the token's other accounts go on
    assert outcome.block_scopes == ["account"]


@pytest.mark.parametrize("status", [503, 500, 502])
def test_outages_are_retried(status: int) -> None:
    body = {"code": 4197, "message": "The endpoint has been ramped down."}
    outcome = ADAPTER.parse_response(respond(status, body), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.RETRY}
    assert not outcome.throttled
    assert "ramped down" in outcome.results[0].reason


def test_a_body_that_is_not_json_is_still_mapped_by_status() -> None:
    response = httpx.Response(502, content=b"<html>Bad gateway</html>")
    assert {r.verdict for r in ADAPTER.parse_response(response, 1).results} == {Verdict.RETRY}
    response = httpx.Response(400, content=b"<html>Bad request</html>")
    assert "Bad request" in ADAPTER.parse_response(response, 1).results[0].reason
