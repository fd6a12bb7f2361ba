"""The Pinterest sandbox over real HTTP: the contract, per-event answers, errors, limits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

from sandboxes import pinterest
from sandboxes.base import RunningServer, Sandbox, fingerprint, serve
from tests.workers.conftest import TOKEN, Clock

ACCOUNT, OTHER, DENIED = "549755885175", "549755885176", "666"
EM = hashlib.sha256(b"ada@example.com").hexdigest()


CLOCK = Clock()


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    sandbox = Sandbox(rate_limit=pinterest.RATE_LIMIT, rate_window_s=60.0, clock=CLOCK)
    sandbox.configure({"revoked_tokens": ["token-revoked"]}, as_default=True)
    running = serve(lambda: pinterest.make_app(sandbox, denied_accounts=[DENIED]))
    yield running
    running.stop()


def event(i: int = 0, **changes: Any) -> dict[str, Any]:
    """A valid event an hour old, identified by a hashed email."""
    return {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": int(CLOCK()) - 3600,
        "event_id": f"evt-{i}",
        "user_data": {"em": [EM]},
        "custom_data": {"currency": "USD", "value": "72.39"},
        **changes,
    }


def send(
    client: httpx.Client,
    body: object,
    token: str | None = TOKEN,
    account: str = ACCOUNT,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"/v5/ad_accounts/{account}/events"
    if isinstance(body, bytes):
        return client.post(url, content=body, headers=headers, params=params)
    return client.post(url, json=body, headers=headers, params=params)


def conforms(body: object, schema: str) -> bool:
    """Whether `body` is valid under one of the contract's response schemas."""
    document = pinterest.contract()
    registry = Registry().with_resource("urn:p", DRAFT4.create_resource(document))
    ref = {"$ref": f"urn:p#/components/schemas/{schema}"}
    return bool(OAS30Validator(ref, registry=registry).is_valid(body))


def received(client: httpx.Client) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = client.get("/_sandbox/received").json()
    return answer


def test_a_valid_batch_is_processed_and_recorded(client: httpx.Client) -> None:
    # Given three valid events
    # When they are sent
    response = send(client, {"data": [event(i) for i in range(3)]})
    # Then each is processed, the answer follows ConversionApiResponse, and the call is recorded
    assert response.status_code == 200
    body = response.json()
    assert conforms(body, "ConversionApiResponse")
    assert (body["num_events_received"], body["num_events_processed"]) == (3, 3)
    assert [e["status"] for e in body["events"]] == ["processed"] * 3
    (call,) = received(client)
    assert call["event_ids"] == ["evt-0", "evt-1", "evt-2"]
    assert call["token_fingerprint"] == fingerprint(TOKEN)
    assert call["headers"]["authorization"] == "Bearer ***"


def test_count_has_only_the_processed_events(client: httpx.Client) -> None:
    # Given a batch of three whose middle event breaks the contract
    events = [event(0), event(1, colour="red"), event(2)]
    # When it is sent and answered 422 with two events processed
    assert send(client, {"data": events}).status_code == 422
    # Then the count has those two events and the one call
    assert client.get("/_sandbox/count").json() == {"events": 2, "calls": 1}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"event_id": None}, "event_id"),
        ({"colour": "red"}, "'colour' was unexpected"),
        ({"event_time": "yesterday"}, "event_time: 'yesterday' is not of type 'integer'"),
        ({"user_data": {"em": EM}}, "user_data.em: '"),
        ({"user_data": {"client_ip_address": "203.0.113.9"}}, "needs em, hashed_maids"),
        ({"event_name": "purchase"}, "event_name: 'purchase' is not one of"),
        ({"user_data": {"em": ["ada@example.com"]}}, "user_data.em: every value must be"),
        ({"event_time": int(CLOCK()) - 8 * 86_400}, "older than 7 days"),
        ({"event_time": int(CLOCK()) + 3600}, "in the future"),
    ],
)
def test_one_bad_event_fails_alone_in_a_422(
    client: httpx.Client, bad: dict[str, Any], message: str
) -> None:
    # Given a batch whose middle event breaks the contract or one of Pinterest's rules
    events = [event(0), {k: v for k, v in event(1, **bad).items() if v is not None}, event(2)]
    # When it is sent
    response = send(client, {"data": events})
    # Then the 422 names that event's problem, and the other two are processed and recorded
    assert response.status_code == 422
    body = response.json()
    assert conforms(body, "DetailedError")
    assert body["code"] == 953
    details = body["details"]
    assert conforms(details, "ConversionApiResponse")
    assert (details["num_events_received"], details["num_events_processed"]) == (3, 2)
    statuses = [e["status"] for e in details["events"]]
    assert statuses == ["processed", "failed", "processed"]
    assert message in details["events"][1]["error_message"]
    assert [c["event_ids"] for c in received(client)] == [["evt-0", "evt-2"]]


def test_an_event_without_email_or_maids_gets_a_warning(client: httpx.Client) -> None:
    user = {"client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0"}
    response = send(client, {"data": [event(0, user_data=user), event(1)]})
    assert response.status_code == 200
    warnings = [e["warning_message"] for e in response.json()["events"]]
    assert warnings == [pinterest.NO_EMAIL_WARNING, None]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not JSON"),
        ({"events": [event()]}, "'data' is a required property"),
        ({"data": []}, "data: holds 0 items; minItems is 1"),
        ({"data": [event(i) for i in range(1001)]}, "data: holds 1001 items; maxItems is 1000"),
        ({"data": [event()], "test": True}, "'test' was unexpected"),
        ([event()], "is not of type 'object'"),
    ],
    ids=["not-json", "no-data", "empty", "1001-events", "extra-key", "not-an-object"],
)
def test_a_bad_envelope_is_a_400_and_nothing_is_recorded(
    client: httpx.Client, body: object, detail: str
) -> None:
    response = send(client, body)
    assert response.status_code == 400
    answer = response.json()
    assert conforms(answer, "Error")
    assert answer["code"] == 4196
    assert detail in answer["message"]
    assert received(client) == []


@pytest.mark.parametrize("token", [None, "token-revoked"], ids=["missing", "revoked"])
def test_a_missing_or_revoked_token_is_a_401(client: httpx.Client, token: str | None) -> None:
    response = send(client, {"data": [event()]}, token=token)
    assert response.status_code == 401
    assert response.json() == {"code": 2, "message": "Authentication failed."}


def test_a_denied_ad_account_is_a_403(client: httpx.Client) -> None:
    response = send(client, {"data": [event()]}, account=DENIED)
    assert response.status_code == 403
    assert response.json()["code"] == 29
    assert send(client, {"data": [event()]}, account="not-digits").status_code == 400


def test_the_rate_limit_counts_calls_per_ad_account(client: httpx.Client) -> None:
    # Given a limit of two calls per minute, used up by one token on one ad account
    client.post("/_sandbox/config", json={"rate_limit": 2}).raise_for_status()
    assert [send(client, {"data": [event()]}).status_code for _ in range(2)] == [200, 200]
    # When that account is called again, even with another token, it is throttled
    throttled = send(client, {"data": [event()]}, token="token-other")
    assert throttled.status_code == 429
    assert throttled.json()["code"] == 8
    assert conforms(throttled.json(), "Error")
    # Then another ad account of the same token is unaffected, and a minute later all is well
    assert send(client, {"data": [event()]}, account=OTHER).status_code == 200
    CLOCK.now_s += 60.0
    assert send(client, {"data": [event()]}).status_code == 200


def test_an_injected_503_answers_pinterests_ramped_down_error(client: httpx.Client) -> None:
    client.post("/_sandbox/faults", json={"status": 503, "count": 1}).raise_for_status()
    response = send(client, {"data": [event()]})
    assert response.status_code == 503
    assert response.json() == {
        "code": 4197,
        "message": "The endpoint has been ramped down and is currently not accepting any traffic.",
    }
    assert send(client, {"data": [event()]}).status_code == 200


def test_test_mode_answers_alike_but_records_no_events(client: httpx.Client) -> None:
    # Given a batch with one bad event, sent with ?test=true
    events = [event(0), event(1, event_name="purchase")]
    # When it is sent
    response = send(client, {"data": events}, params={"test": "true"})
    # Then the answer is the live one, and the call is visible as a test with no events kept
    assert response.status_code == 422
    assert [e["status"] for e in response.json()["details"]["events"]] == ["processed", "failed"]
    (call,) = received(client)
    assert call["query"] == {"test": "true"}
    assert call["n_events"] == 0
    assert client.get("/_sandbox/events").json() == []
    assert send(client, {"data": events}, params={"test": "maybe"}).status_code == 400
