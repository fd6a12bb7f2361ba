"""The LinkedIn adapter: request shape and response reading (no I/O; httpx objects only)."""

from __future__ import annotations

import json

import httpx
import pytest

from dispatcher import Destination
from dispatcher.settings import LinkedInSettings
from workers.adapters.base import Verdict, retry_after_s
from workers.adapters.linkedin import LinkedInAdapter, element_errors

ADAPTER = LinkedInAdapter()
DEST = Destination(platform="linkedin", token="secret-token")
TABLE = LinkedInSettings(base_url="https://li.example", version="202410")


def respond(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


def test_request_is_a_batch_create_with_the_seed_headers() -> None:
    request = ADAPTER.build_request(DEST, TABLE, [b'{"a":1}', b'{"b":2}'], "batch1")
    assert request.method == "POST"
    assert str(request.url) == "https://li.example/rest/conversionEvents"
    assert request.headers["Authorization"] == "Bearer secret-token"
    assert request.headers["LinkedIn-Version"] == "202410"
    assert request.headers["X-Restli-Protocol-Version"] == "2.0.0"
    assert request.headers["X-RestLi-Method"] == "BATCH_CREATE"
    assert json.loads(request.content) == {"elements": [{"a": 1}, {"b": 2}]}


def test_per_element_statuses_are_read_in_order() -> None:
    body = {"elements": [{"status": 201}, {"status": 400, "error": {"message": "bad"}}]}
    outcome = ADAPTER.parse_response(respond(200, body), 2)
    assert [r.verdict for r in outcome.results] == [Verdict.DELIVERED, Verdict.REJECTED]
    assert "bad" in outcome.results[1].reason


@pytest.mark.parametrize("statuses", [[201, 500, 400], [429]])
def test_an_element_list_of_another_length_with_a_failure_sends_the_batch_again(
    statuses: list[int],
) -> None:
    # A failure that cannot be matched to its event is not taken as delivered: the batch
    # is retried, an attempt counted (eventId deduplicates)
    body = {"elements": [{"status": s} for s in statuses]}
    outcome = ADAPTER.parse_response(respond(200, body), 4)
    assert [r.verdict for r in outcome.results] == [Verdict.RETRY] * 4
    said = f"{len(statuses)} element results for 4 events, not all created: sent again"
    assert outcome.results[0].reason == said


def test_an_element_list_of_another_length_all_created_is_accepted_with_a_warning() -> None:
    outcome = ADAPTER.parse_response(respond(200, {"elements": [{"status": 201}]}), 3)
    assert [r.verdict for r in outcome.results] == [Verdict.DELIVERED] * 3
    assert outcome.warnings == ["1 element results for 3 events"]


@pytest.mark.parametrize("status", [202, 204])
def test_any_2xx_without_element_detail_is_delivered(status: int) -> None:
    outcome = ADAPTER.parse_response(respond(status), 2)
    assert [r.verdict for r in outcome.results] == [Verdict.DELIVERED] * 2


def test_422_index_groups_reject_exactly_those_elements_and_resend_the_rest() -> None:
    message = (
        "Index: 1, ERROR :: /conversionValue/amount :: field is required but not found\n"
        "Index: 3, ERROR :: /user :: field is required but not found\n"
    )
    outcome = ADAPTER.parse_response(respond(422, {"message": message, "status": 422}), 5)
    verdicts = [r.verdict for r in outcome.results]
    assert verdicts == [
        Verdict.RESEND,
        Verdict.REJECTED,
        Verdict.RESEND,
        Verdict.REJECTED,
        Verdict.RESEND,
    ]
    assert "/conversionValue/amount" in outcome.results[1].reason
    assert "/user" in outcome.results[3].reason
    assert "/user" not in outcome.results[1].reason


def test_400_validation_failed_batch_indexes_are_attributed() -> None:
    message = (
        "Validation failed because [{field=Invalid Conversion time, batchIndex=2, "
        "type=INVALID_CONVERSION_TIME_FIELD_VALUE, "
        "message=Conversion time should be within 90 days.}]"
    )
    outcome = ADAPTER.parse_response(respond(400, {"message": message, "status": 400}), 4)
    assert [i for i, r in enumerate(outcome.results) if r.verdict is Verdict.REJECTED] == [2]
    assert "90 days" in outcome.results[2].reason


def test_indices_list_format_is_understood() -> None:
    assert set(element_errors("Invalid input at indices [0, 4] (0-indexed)")) == {0, 4}


def test_a_400_naming_no_element_rejects_the_whole_batch() -> None:
    outcome = ADAPTER.parse_response(respond(400, {"message": "conversion is deleted"}), 3)
    assert {r.verdict for r in outcome.results} == {Verdict.REJECTED}


def test_a_deleted_or_disabled_rule_pauses_the_destination_instead_of_rejecting() -> None:
    # Given LinkedIn's answer for events of a rule marked as deleted (seed 003)
    message = (
        "Invalid Conversion information provided, this event(s) is associated to a "
        "conversion that is marked as deleted. Conversion enabled should be true"
    )
    outcome = ADAPTER.parse_response(respond(400, {"status": 400, "message": message}), 3)
    # Then no event is dead-lettered: the destination pauses as misconfigured, saying why
    assert {r.verdict for r in outcome.results} == {Verdict.AUTH}
    assert outcome.results[0].reason.startswith("configuration: the conversion rule is deleted")


def test_throttling_outages_and_auth_map_to_retry_and_pause() -> None:
    throttled = ADAPTER.parse_response(respond(429, {}, {"Retry-After": "7"}), 2)
    assert throttled.throttled
    assert throttled.retry_after_s == 7.0
    assert {r.verdict for r in throttled.results} == {Verdict.WAIT}
    assert {r.verdict for r in ADAPTER.parse_response(respond(503, {}), 1).results} == {
        Verdict.RETRY
    }
    revoked = ADAPTER.parse_response(respond(401, {"serviceErrorCode": 65601}), 1)
    assert revoked.results[0].verdict is Verdict.AUTH
    assert "revoked" in revoked.results[0].reason
    assert ADAPTER.parse_response(respond(403, {}), 1).results[0].verdict is Verdict.AUTH


def test_retry_after_accepts_an_http_date() -> None:
    response = respond(429, {}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_s(response, now_s=1445412470.0) == 10.0


def test_the_token_never_appears_in_an_outcome() -> None:
    outcome = ADAPTER.parse_response(respond(401, {"message": "Invalid access token"}), 1)
    assert "secret-token" not in repr(outcome)


def test_a_sunset_version_pauses_naming_the_setting_and_linkedins_words() -> None:
    # Given LinkedIn answers 426 to a request sent with version 202410
    request = ADAPTER.build_request(DEST, TABLE, [b"{}"], "b")
    body = {
        "status": 426,
        "code": "NONEXISTENT_VERSION",
        "message": "Requested version 202410 is not active",
    }
    response = httpx.Response(426, json=body, request=request)
    # When the answer is read
    outcome = ADAPTER.parse_response(response, 1)
    # Then the destination pauses with the version sent, LinkedIn's message and the setting
    reason = outcome.results[0].reason
    assert outcome.results[0].verdict is Verdict.AUTH
    assert "LinkedIn-Version 202410" in reason
    assert "Requested version 202410 is not active" in reason
    assert "linkedin.version" in reason
    assert "CONVDISP_LINKEDIN__VERSION" in reason


def test_the_default_version_is_a_current_one() -> None:
    # LinkedIn sunsets versions after about a year: the default must not be older than peers'
    assert LinkedInSettings().version >= "202603"
