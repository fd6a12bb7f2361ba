"""The vNative adapter: request shape, every code mapping, job parsing and lookup."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from dispatcher import Destination
from dispatcher.settings import VNativeSettings
from sandboxes import vnative as sandbox
from sandboxes.base import serve
from workers.adapters.base import JobAdapter, Verdict
from workers.adapters.vnative import ADAPTER, app_error, job_summary

DEST = Destination(platform="vnative", token="secret-key")
POSTBACK = Destination(platform="vnative", token="secret-key", send_postback=True)
TABLE = VNativeSettings(base_url="https://api.trackier.example/", rate_per_min=90, burst=3)
JOB = {"type": "import", "state": "pending", "logs": [], "_id": "5c2f5454333446229468a428"}
QUEUED = {"success": True, "data": {"message": "Job has been queued!!", "job": JOB}}


def respond(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


def failure(code: int, message: str = "") -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}}


def test_request_is_the_seeds_import_call_with_the_destinations_send_postback() -> None:
    # Given two stored events and a destination without postbacks
    payloads = [b'{"click_id":"a","sub1":"x"}', b'{"click_id":"b"}']
    # When the requests are built for it and for one with postbacks
    request = ADAPTER.build_request(DEST, TABLE, payloads, "batch-1")
    with_postback = ADAPTER.build_request(POSTBACK, TABLE, payloads, "batch-1")
    # Then both POST the seed's body to /advertiser/conversion-import with the API key
    assert request.method == "POST"
    assert str(request.url) == "https://api.trackier.example/advertiser/conversion-import"
    assert request.headers["X-Api-Key"] == "secret-key"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "conversions": [{"click_id": "a", "sub1": "x"}, {"click_id": "b"}],
        "send_postback": False,
    }
    assert json.loads(with_postback.content)["send_postback"] is True


def test_limits_count_calls_per_api_key() -> None:
    [limit] = ADAPTER.limits(DEST, TABLE)
    assert limit.scope == f"key:{DEST.fingerprint()}"
    assert (limit.platform, limit.rate_per_min, limit.burst) == ("vnative", 90, 3)


@pytest.mark.parametrize("status", [200, 201, 202])
def test_a_queued_import_delivers_every_event_and_names_the_job(status: int) -> None:
    outcome = ADAPTER.parse_response(respond(status, QUEUED), 3)
    assert [r.verdict for r in outcome.results] == [Verdict.DELIVERED] * 3
    assert outcome.job_id == "5c2f5454333446229468a428"
    assert outcome.job_state == "pending"
    assert outcome.job_detail == "Job has been queued!!"


def test_a_queued_import_without_a_job_id_is_delivered_with_a_warning() -> None:
    outcome = ADAPTER.parse_response(respond(200, {"success": True, "data": {}}), 1)
    assert outcome.results[0].verdict is Verdict.DELIVERED
    assert outcome.job_id is None
    assert "no job" in outcome.warnings[0]


@pytest.mark.parametrize(
    ("code", "verdict", "said"),
    [
        (13, Verdict.AUTH, "invalid API key (code 13)"),
        (41, Verdict.AUTH, "IP not whitelisted (code 41)"),
        (42, Verdict.AUTH, "account is locked (code 42)"),
        (5, Verdict.AUTH, "insufficient permission"),
        (12, Verdict.AUTH, "unauthorized"),
        (31, Verdict.AUTH, "check vnative.base_url"),
        (20, Verdict.REJECTED, "parameter error (code 20): conversions[0].click_id is required"),
        (30, Verdict.REJECTED, "bad request (code 30)"),
        (40, Verdict.WAIT, "too many requests (code 40)"),
        (50, Verdict.RETRY, "system upgrade (code 50)"),
        (51, Verdict.RETRY, "server error (code 51)"),
    ],
)
@pytest.mark.parametrize("status", [200, 400])
def test_application_codes_map_to_verdicts_whatever_the_http_status(
    code: int, verdict: Verdict, said: str, status: int
) -> None:
    # Given vNative's error with a code, on a 200 or on an HTTP error
    body = failure(code, "conversions[0].click_id is required")
    # When it is read
    outcome = ADAPTER.parse_response(respond(status, body), 2)
    # Then every event gets the code's verdict, and the reason says which code
    assert {r.verdict for r in outcome.results} == {verdict}
    assert said in outcome.results[0].reason
    assert outcome.throttled is (code == 40)


def test_code_33_duplicated_resource_counts_as_delivered() -> None:
    outcome = ADAPTER.parse_response(respond(409, failure(33, "Duplicated Resource")), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.DELIVERED}
    assert outcome.job_id is None
    assert "already imported" in outcome.warnings[0]


@pytest.mark.parametrize(("status", "code"), [(503, 50), (503, 51), (429, 51), (420, 50)])
def test_throttling_or_a_timed_outage_counts_no_attempt_whatever_the_code(
    status: int, code: int
) -> None:
    outcome = ADAPTER.parse_response(respond(status, failure(code), {"Retry-After": "120"}), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.WAIT}
    assert outcome.retry_after_s == 120.0


def test_code_40_honours_retry_after() -> None:
    outcome = ADAPTER.parse_response(respond(429, failure(40), {"Retry-After": "7"}), 1)
    assert outcome.throttled
    assert outcome.retry_after_s == 7.0


@pytest.mark.parametrize(
    "body",
    [
        {"success": False, "error": {"code": 13, "message": "Invalid API Key"}},
        {"success": False, "errors": {"code": "13", "message": "Invalid API Key"}},
        {"success": False, "errors": [{"code": 13, "message": "Invalid API Key"}]},
        {"success": False, "code": 13, "message": "Invalid API Key"},
        {"success": False, "data": {"code": 13, "msg": "Invalid API Key"}},
        {"code": 13, "error": "Invalid API Key"},
    ],
)
def test_the_code_is_found_wherever_it_sits(body: dict[str, Any]) -> None:
    assert app_error(body) == (13, "Invalid API Key")
    assert ADAPTER.parse_response(respond(200, body), 1).results[0].verdict is Verdict.AUTH


@pytest.mark.parametrize(
    ("status", "verdict", "said"),
    [
        (401, Verdict.AUTH, "credentials refused (401)"),
        (403, Verdict.AUTH, "credentials refused (403)"),
        (404, Verdict.AUTH, "the platform answered 404; check vnative.base_url"),
        (301, Verdict.AUTH, "the platform answered 301; check vnative.base_url"),
        (500, Verdict.RETRY, "platform unavailable (500)"),
        (501, Verdict.AUTH, "the platform answered 501; check vnative.base_url"),
        (503, Verdict.RETRY, "platform unavailable (503)"),
        (429, Verdict.WAIT, "throttled (429)"),
        (420, Verdict.WAIT, "throttled (420)"),
        (409, Verdict.DELIVERED, ""),
        (400, Verdict.REJECTED, "refused (400)"),
        (200, Verdict.RETRY, "unrecognised answer (200)"),
    ],
)
@pytest.mark.parametrize("body", [b'{"success": false}', b"<html>Error</html>"])
def test_http_statuses_without_a_code_map_to_verdicts(
    status: int, verdict: Verdict, said: str, body: bytes
) -> None:
    outcome = ADAPTER.parse_response(httpx.Response(status, content=body), 3)
    assert {r.verdict for r in outcome.results} == {verdict}
    assert said in outcome.results[0].reason
    assert outcome.throttled is (status in (420, 429))


def test_the_key_never_appears_in_an_outcome() -> None:
    for response in (respond(401, failure(13)), respond(200, QUEUED), respond(400, failure(20))):
        assert "secret-key" not in repr(ADAPTER.parse_response(response, 1))


def test_the_adapter_follows_jobs() -> None:
    assert isinstance(ADAPTER, JobAdapter)
    request = ADAPTER.job_request(DEST, TABLE, "5c54/07")
    assert request.method == "GET"
    assert str(request.url) == "https://api.trackier.example/jobs/5c54%2F07"
    assert request.headers["X-Api-Key"] == "secret-key"


def job_answer(status: str, *messages: str) -> httpx.Response:
    """A `GET /jobs/{id}` answer shaped like the Trackier docs' sample."""
    logs = [{"object": "import.csv.conversions", "priority": 1, "message": m} for m in messages]
    job = {"name": "import.json.conversion", "_id": "5c54073a89d4465d2d17cf96", "status": status}
    return respond(200, {"success": True, "data": {"job": job, "logs": logs}})


UNFINISHED = [("pending", False, False), ("progress", False, False)]


@pytest.mark.parametrize(
    ("status", "finished", "failed"),
    [*UNFINISHED, ("completed", True, False), ("failed", True, True)],
)
def test_job_states_map_to_finished_and_failed(status: str, finished: bool, failed: bool) -> None:
    line = "Total Processed: 2 | Imported: 0 | Edited: 2 | Errors: 0"
    state = ADAPTER.parse_job(job_answer(status, line))
    assert (state.state, state.detail) == (status, line)
    assert (state.finished, state.failed) == (finished, failed)


def test_a_completed_job_with_errors_says_so_but_fails_nothing() -> None:
    line = "Total Processed: 5 | Imported: 3 | Edited: 0 | Errors: 2"
    state = ADAPTER.parse_job(job_answer("completed", line))
    assert (state.finished, state.failed) == (True, False)
    assert state.detail.startswith(line)
    assert "2 conversion(s) had errors" in state.detail


def test_a_completed_job_whose_every_conversion_had_errors_fails() -> None:
    # Its rows are dead-lettered with the job's line, rather than counted as delivered.
    line = "Total Processed: 2 | Imported: 0 | Edited: 0 | Errors: 2"
    state = ADAPTER.parse_job(job_answer("completed", line))
    assert (state.finished, state.failed) == (True, True)
    assert state.detail == f"{line} (every conversion had errors)"


def test_the_import_answers_job_shape_with_state_and_string_logs_is_read() -> None:
    body = {"success": True, "data": {"job": {"state": "completed", "logs": ["Imported: 1"]}}}
    state = ADAPTER.parse_job(respond(200, body))
    assert (state.state, state.finished, state.detail) == ("completed", True, "Imported: 1")


@pytest.mark.parametrize(
    "response",
    [respond(500, failure(51)), respond(200, failure(40)), httpx.Response(404, text="nginx")],
)
def test_an_unanswered_poll_leaves_the_job_open(response: httpx.Response) -> None:
    state = ADAPTER.parse_job(response)
    assert (state.finished, state.failed) == (False, False)
    assert "poll answered" in state.detail


def test_a_job_vnative_no_longer_knows_ends_without_failing_its_events() -> None:
    # The import may have run: following it to its maximum age would dead-letter all
    state = ADAPTER.parse_job(respond(404, failure(31)))
    assert (state.finished, state.failed) == (True, False)
    assert "may be imported" in state.detail


def test_the_logs_line_with_the_highest_total_is_the_summary() -> None:
    logs = ["Total Processed: 1 | Errors: 0", {"message": "Total Processed: 9 | Errors: 0"}, "x"]
    assert job_summary(logs) == "Total Processed: 9 | Errors: 0"
    assert job_summary([{"message": "a"}, "b"]) == "a; b"
    assert job_summary(None) == ""


def test_no_lookup_is_made_since_no_job_can_be_tied_to_a_batch() -> None:
    # vNative's jobs carry no label of ours, so the engine cannot ask whether a batch
    # arrived after a timeout; it resends (the documented double-count risk)
    assert ADAPTER.lookup_request(DEST, TABLE, "batch-1") is None
    jobs = {"success": True, "data": {"jobs": [{"_id": "j1", "type": "import"}]}}
    assert ADAPTER.parse_lookup(respond(200, jobs), "batch-1") is None


def test_a_round_trip_through_the_sandbox() -> None:
    # Given the vNative sandbox and two events
    running = serve(sandbox.make_app)
    table = VNativeSettings(base_url=running.url)
    try:
        with httpx.Client(timeout=10) as http:
            # When they are imported and the job is polled until it finishes
            payloads = [b'{"click_id":"c1"}', b'{"click_id":"c2"}']
            response = http.send(ADAPTER.build_request(POSTBACK, table, payloads, "b"))
            outcome = ADAPTER.parse_response(response, 2)
            poll = ADAPTER.job_request(POSTBACK, table, str(outcome.job_id))
            states = [ADAPTER.parse_job(http.send(poll)) for _ in range(2)]
    finally:
        running.stop()
    # Then both are delivered, and the job goes to progress, then completed with its logs
    assert {r.verdict for r in outcome.results} == {Verdict.DELIVERED}
    assert [s.state for s in states] == ["progress", "completed"]
    assert states[1].detail == "Total Processed: 2 | Imported: 2 | Edited: 0 | Errors: 0"
