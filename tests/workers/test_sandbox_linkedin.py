"""The LinkedIn sandbox, driven over real HTTP the way the delivery engine drives LinkedIn."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher.settings import LINKEDIN_VERSION
from sandboxes import linkedin
from sandboxes.base import RunningServer, fingerprint, serve
from tests.workers.conftest import TOKEN, linkedin_headers

EMAIL_SHA256 = hashlib.sha256(b"ada@example.com").hexdigest()
RULE = "urn:lla:llaPartnerConversion:123"
ACCOUNT = "urn:li:sponsoredAccount:5123456"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = serve(linkedin.make_app)
    yield running
    running.stop()


def event(i: int = 0, **changes: Any) -> dict[str, Any]:
    """A valid conversion event, an hour old."""
    return {
        "conversion": RULE,
        "conversionHappenedAt": int(time.time() * 1000) - 3_600_000,
        "conversionValue": {"currencyCode": "USD", "amount": "50.0"},
        "user": {"userIds": [{"idType": "SHA256_EMAIL", "idValue": EMAIL_SHA256}]},
        "eventId": f"evt-{i}",
        **changes,
    }


def send(client: httpx.Client, events: list[dict[str, Any]], token: str = TOKEN) -> httpx.Response:
    return client.post(
        "/rest/conversionEvents",
        json={"elements": events},
        headers=linkedin_headers("BATCH_CREATE", token),
    )


def received(client: httpx.Client) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = client.get("/_sandbox/received").json()
    return answer


def test_accepts_a_valid_batch_and_records_it(client: httpx.Client) -> None:
    # Given three valid events
    events = [event(i) for i in range(3)]
    # When they are sent as one BATCH_CREATE
    response = send(client, events)
    # Then each element is created, in order, and the call is recorded without the raw token
    assert response.status_code == 200
    assert response.json() == {"elements": [{"status": 201}] * 3}
    [call] = received(client)
    assert call["token_fingerprint"] == fingerprint(TOKEN)
    assert call["headers"]["authorization"] == "Bearer ***"
    assert call["headers"]["linkedin-version"] == LINKEDIN_VERSION
    assert call["events"] == events
    ids = client.get("/_sandbox/events", params={"fields": "eventId"}).json()
    assert ids == [{"eventId": "evt-0"}, {"eventId": "evt-1"}, {"eventId": "evt-2"}]


def test_refuses_a_batch_over_5000_elements(client: httpx.Client) -> None:
    # Given 5001 valid events
    events = [event(i) for i in range(5001)]
    # When they are sent in one call
    response = send(client, events)
    # Then the call is refused, naming the limit, and nothing is recorded
    assert response.status_code == 400
    assert "5000" in response.json()["message"]
    assert received(client) == []


def test_one_missing_field_fails_the_whole_batch_naming_its_index(client: httpx.Client) -> None:
    # Given ten events of which the fourth has a value without an amount
    events = [event(i) for i in range(10)]
    events[3]["conversionValue"] = {"currencyCode": "USD"}
    # When they are sent
    response = send(client, events)
    # Then LinkedIn's 422 names index 3 and no event is recorded
    assert response.status_code == 422
    assert response.json() == {
        "message": "Index: 3, ERROR :: /conversionValue/amount :: "
        "field is required but not found and has no default value\n",
        "status": 422,
    }
    assert received(client) == []


def test_a_bad_email_hash_fails_validation_naming_the_batch_index(client: httpx.Client) -> None:
    # Given eight events of which the last carries an unhashed email
    events = [event(i) for i in range(8)]
    events[7]["user"] = {"userIds": [{"idType": "SHA256_EMAIL", "idValue": "ada@example.com"}]}
    # When they are sent
    response = send(client, events)
    # Then the 400 lists that element by batchIndex and nothing is recorded
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("Validation failed because [{field=")
    assert "batchIndex=7, type=INVALID_USER_IDENTIFICATION_FIELD_VALUE" in message
    assert "batchIndex=0" not in message
    assert received(client) == []


def test_an_event_older_than_90_days_is_refused(client: httpx.Client) -> None:
    # Given an event 91 days old
    old_ms = int(time.time() * 1000) - 91 * 86_400_000
    # When it is sent
    response = send(client, [event(conversionHappenedAt=old_ms)])
    # Then LinkedIn's time-window message comes back for batchIndex 0
    assert response.json() == {
        "message": "Validation failed because [{field=Invalid Conversion time, batchIndex=0, "
        "type=INVALID_CONVERSION_TIME_FIELD_VALUE, message=Conversion time should be within "
        "90 days.}]",
        "status": 400,
    }


def test_schema_errors_win_over_validation_errors(client: httpx.Client) -> None:
    # Given one event without a user and another with an unknown field and a bad URN
    events = [event(0), event(1, conversion="urn:li:conversion:1", extra=True)]
    del events[0]["user"]
    # When they are sent
    response = send(client, events)
    # Then the 422 form names both elements
    assert response.status_code == 422
    assert response.json()["message"] == (
        "Index: 0, ERROR :: /user :: field is required but not found and has no default value\n"
        "Index: 1, ERROR :: /extra :: unrecognized field found but not allowed\n"
    )


def test_a_missing_version_header_is_refused(client: httpx.Client) -> None:
    # Given the usual headers without LinkedIn-Version
    sent = linkedin_headers("BATCH_CREATE")
    del sent["LinkedIn-Version"]
    # When a batch is sent
    response = client.post("/rest/conversionEvents", json={"elements": [event()]}, headers=sent)
    # Then LinkedIn's VERSION_MISSING answer comes back
    assert response.status_code == 400
    assert response.json()["code"] == "VERSION_MISSING"
    assert received(client) == []


def test_a_revoked_token_gets_65601_and_a_missing_one_65600(client: httpx.Client) -> None:
    # Given a token the member has revoked
    client.post("/_sandbox/config", json={"revoked_tokens": ["gone"]}).raise_for_status()
    # When it is used, and when no token is sent at all
    revoked = send(client, [event()], token="gone")
    missing = client.post(
        "/rest/conversionEvents",
        json={"elements": [event()]},
        headers=linkedin_headers("BATCH_CREATE", token=None),
    )
    # Then both are 401s LinkedIn tells apart, and the call log has them without tokens
    assert revoked.status_code == missing.status_code == 401
    assert revoked.json()["serviceErrorCode"] == 65601
    assert revoked.json()["code"] == "REVOKED_ACCESS_TOKEN"
    assert missing.json()["serviceErrorCode"] == 65600
    calls = client.get("/_sandbox/calls").json()
    assert [(c["token_fingerprint"], c["status"]) for c in calls] == [
        (fingerprint("gone"), 401),
        ("", 401),
    ]
    assert received(client) == []


def test_an_injected_429_with_retry_after_comes_once_then_calls_work(
    client: httpx.Client,
) -> None:
    # Given one injected 429 asking for a 7 s wait
    fault = {"status": 429, "retry_after": "7"}
    client.post("/_sandbox/faults", json=fault).raise_for_status()
    # When the same batch is sent twice
    first, second = send(client, [event()]), send(client, [event()])
    # Then only the first is throttled, in LinkedIn's format, and only the second recorded
    assert first.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert first.json()["code"] == "TOO_MANY_REQUESTS"
    assert second.status_code == 200
    assert len(received(client)) == 1


def test_an_injected_503_uses_linkedins_body(client: httpx.Client) -> None:
    # Given an injected outage
    client.post("/_sandbox/faults", json={"status": 503}).raise_for_status()
    # When a batch is sent
    response = send(client, [event()])
    # Then LinkedIn's 503 body comes back
    assert response.status_code == 503
    assert response.json() == {"status": 503, "message": "Service Unavailable"}


def test_an_injected_hang_delays_the_answer_then_accepts(client: httpx.Client) -> None:
    # Given a call that hangs for 0.2 s
    client.post("/_sandbox/faults", json={"status": 0, "delay_s": 0.2}).raise_for_status()
    # When a batch is sent
    started_s = time.monotonic()
    response = send(client, [event()])
    # Then it is answered normally, late
    assert time.monotonic() - started_s >= 0.2
    assert response.status_code == 200
    assert len(received(client)) == 1


def test_the_rate_limit_throttles_the_fourth_call_in_a_window(
    client: httpx.Client, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 3 calls per token per minute and a clock the test moves
    now_s = [time.time()]
    monkeypatch.setattr(server.sandbox, "clock", lambda: now_s[0])
    limits = {"rate_limit": 3, "rate_window_s": 60}
    client.post("/_sandbox/config", json=limits).raise_for_status()
    # When a token makes four calls, another token one, and the first again a minute later
    first_three = [send(client, [event(i)]).status_code for i in range(3)]
    fourth = send(client, [event(3)])
    other = send(client, [event()], token="token-other")
    now_s[0] += 60.5
    later = send(client, [event()])
    # Then the fourth call is throttled in LinkedIn's format; other tokens and later calls pass
    assert first_three == [200, 200, 200]
    assert fourth.status_code == 429
    assert fourth.json() == {
        "status": 429,
        "code": "TOO_MANY_REQUESTS",
        "message": "Resource level throttle limit for calls to this resource is reached.",
    }
    assert (other.status_code, later.status_code) == (200, 200)


def test_a_sunset_version_gets_426(client: httpx.Client) -> None:
    # Given a LinkedIn-Version the seed lists as sunset
    sent = {**linkedin_headers("BATCH_CREATE"), "LinkedIn-Version": "202305"}
    # When a batch is sent with it
    response = client.post("/rest/conversionEvents", json={"elements": [event()]}, headers=sent)
    # Then LinkedIn answers 426, which the adapter reads as "raise the version"
    assert response.status_code == 426
    assert response.json()["code"] == "NONEXISTENT_VERSION"


def test_a_single_create_gets_201_and_an_empty_body(client: httpx.Client) -> None:
    # Given one event sent without X-RestLi-Method
    sent = linkedin_headers()
    # When it is posted as the body itself
    response = client.post("/rest/conversionEvents", json=event(), headers=sent)
    # Then it is created with no body, and recorded
    assert response.status_code == 201
    assert response.content == b""
    assert [e["eventId"] for e in client.get("/_sandbox/events").json()] == ["evt-0"]


def test_a_single_create_reports_schema_errors_without_an_index(client: httpx.Client) -> None:
    # Given one event without a conversion time
    body = event()
    del body["conversionHappenedAt"]
    # When it is posted alone
    response = client.post("/rest/conversionEvents", json=body, headers=linkedin_headers())
    # Then the 422 has no "Index: N, " prefix
    assert response.status_code == 422
    assert response.json()["message"] == (
        "ERROR :: /conversionHappenedAt :: field is required but not found and has no default "
        "value\n"
    )


def test_conversion_rules_are_created_listed_and_associated(client: httpx.Client) -> None:
    # Given a conversion rule as the seed's sample request describes it
    rule = {
        "name": "Conversion API Segment 1",
        "account": ACCOUNT,
        "conversionMethod": "CONVERSIONS_API",
        "type": "LEAD",
    }
    # When it is created, listed, and associated with a campaign
    created = client.post(
        "/rest/conversions",
        json=rule,
        params={"autoAssociationType": "ALL_CAMPAIGNS"},
        headers=linkedin_headers(),
    )
    rule_id = created.json()["id"]
    listed = client.get(
        "/rest/conversions",
        params={"q": "account", "account": ACCOUNT},
        headers=linkedin_headers(),
    )
    key = (
        "(campaign:urn%3Ali%3AsponsoredCampaign%3A337643194,"
        f"conversion:urn%3Alla%3AllaPartnerConversion%3A{rule_id})"
    )
    associated = client.put(f"/rest/campaignConversions/{key}", headers=linkedin_headers())
    # Then the id comes in body and header, the list has LinkedIn's defaults, and 204 associates
    assert created.status_code == 201
    assert created.headers["x-restli-id"] == str(rule_id)
    [element] = listed.json()["elements"]
    assert element["id"] == rule_id
    assert element["enabled"] is True
    assert element["postClickAttributionWindowSize"] == 30
    assert element["viewThroughAttributionWindowSize"] == 7
    assert associated.status_code == 204


def test_a_rule_with_a_bad_window_is_refused(client: httpx.Client) -> None:
    # Given a rule whose post-click window is 14 days
    rule = {
        "name": "n",
        "account": ACCOUNT,
        "conversionMethod": "CONVERSIONS_API",
        "type": "PURCHASE",
        "postClickAttributionWindowSize": 14,
    }
    # When it is created
    response = client.post("/rest/conversions", json=rule, headers=linkedin_headers())
    # Then it is refused
    assert response.status_code == 400
    assert "1, 7, 30 or 90" in response.json()["message"]


def test_events_for_a_disabled_rule_are_refused(client: httpx.Client) -> None:
    # Given a rule created disabled
    rule = {
        "name": "off",
        "account": ACCOUNT,
        "conversionMethod": "CONVERSIONS_API",
        "type": "LEAD",
        "enabled": False,
    }
    created = client.post("/rest/conversions", json=rule, headers=linkedin_headers())
    urn = f"urn:lla:llaPartnerConversion:{created.json()['id']}"
    # When an event names it
    response = send(client, [event(conversion=urn)])
    # Then LinkedIn's "marked as deleted" answer comes back
    assert response.status_code == 400
    assert "marked as deleted" in response.json()["message"]


def test_without_bodies_the_sandbox_keeps_counts_and_event_ids(client: httpx.Client) -> None:
    # Given a sandbox told not to keep event bodies
    client.post("/_sandbox/config", json={"record_bodies": False}).raise_for_status()
    # When two batches are accepted
    send(client, [event(i) for i in range(3)])
    send(client, [event(i) for i in range(3, 5)])
    # Then the summary counts them and their ids are still listed
    summary = client.get("/_sandbox/received", params={"summary": 1}).json()
    assert (summary["n_calls"], summary["total_events"]) == (2, 5)
    assert [row["n_events"] for row in summary["calls"]] == [3, 2]
    assert received(client)[0]["events"] == []
    ids = client.get("/_sandbox/events", params={"fields": "eventId"}).json()
    assert ids == [{"eventId": f"evt-{i}"} for i in range(5)]


def test_count_gives_accepted_events_and_logged_calls_cheaply(client: httpx.Client) -> None:
    # Given a fresh sandbox, which counts nothing yet
    assert client.get("/_sandbox/count").json() == {"events": 0, "calls": 0}
    # When a batch of three is accepted and a call without a token is refused
    assert send(client, [event(i) for i in range(3)]).status_code == 200
    refused = client.post(
        "/rest/conversionEvents",
        json={"elements": [event(3)]},
        headers=linkedin_headers("BATCH_CREATE", token=None),
    )
    assert refused.status_code == 401
    # Then the count has the three accepted events and both calls, like /received and /calls
    assert client.get("/_sandbox/count").json() == {"events": 3, "calls": 2}
    assert len(client.get("/_sandbox/calls").json()) == 2
    # And a reset starts it again from zero
    client.post("/_sandbox/reset").raise_for_status()
    assert client.get("/_sandbox/count").json() == {"events": 0, "calls": 0}


def test_the_control_api_refuses_bad_settings(client: httpx.Client) -> None:
    # Given / When a fault and a config with impossible values are posted
    fault = client.post("/_sandbox/faults", json={"status": 0})
    config = client.post("/_sandbox/config", json={"rate_limit": -1})
    # Then both are refused with a reason
    assert fault.status_code == config.status_code == 400
    assert "delay_s" in fault.json()["message"]
    assert "rate_limit" in config.json()["message"]
