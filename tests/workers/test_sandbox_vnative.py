"""The vNative sandbox, driven over real HTTP the way the delivery engine drives vNative."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandboxes import vnative
from sandboxes.base import RunningServer, fingerprint, serve

KEY = "key-main"
# The job object of the seed's sample response, key by key.
SEED_JOB_KEYS = {"orgId", "type", "subType", "relatedObject", "resource", "resourceId", "state"}
SEED_JOB_KEYS |= {"logs", "_id", "live", "created", "modified", "meta"}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = serve(vnative.make_app)
    yield running
    running.stop()


def conversion(i: int = 0, **changes: Any) -> dict[str, Any]:
    return {"click_id": f"click-{i}", "sub1": "shop", **changes}


def send(client: httpx.Client, body: object, key: str | None = KEY, **kw: Any) -> httpx.Response:
    headers = {"X-Api-Key": key} if key is not None else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/advertiser/conversion-import", content=content, headers=headers, **kw)


def job_of(response: httpx.Response) -> str:
    job_id: str = response.json()["data"]["job"]["_id"]
    return job_id


def poll(client: httpx.Client, job_id: str, key: str = KEY) -> httpx.Response:
    return client.get(f"/jobs/{job_id}", headers={"X-Api-Key": key})


def switches(client: httpx.Client, **changes: Any) -> httpx.Response:
    return client.post("/_sandbox/vnative/config", json=changes)


def received(client: httpx.Client) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = client.get("/_sandbox/received").json()
    return answer


def test_accepts_an_import_and_answers_like_the_seed(client: httpx.Client) -> None:
    # Given two conversions, one with custom dimensions
    conversions = [conversion(0, custom_dimensions={"plan": "gold"}), conversion(1)]
    # When they are imported with send_postback
    response = send(client, {"conversions": conversions, "send_postback": True})
    # Then a pending import job comes back in the seed's shape
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"]["message"] == "Job has been queued!!"
    job = body["data"]["job"]
    assert set(job) == SEED_JOB_KEYS
    assert (job["type"], job["resource"]) == ("import", "Conversion")
    assert job["relatedObject"]["sendPostback"] == "1"
    assert (job["state"], len(job["_id"])) == ("pending", 24)
    assert set(job["created"]) == {"date", "timezone_type", "timezone"}
    # And the conversions are recorded as events, without the raw key
    [call] = received(client)
    assert call["events"] == conversions
    assert call["token_fingerprint"] == fingerprint(KEY)
    assert KEY not in str(call)
    ids = client.get("/_sandbox/events", params={"fields": "click_id"}).json()
    assert ids == [{"click_id": "click-0"}, {"click_id": "click-1"}]


@pytest.mark.parametrize("key", [None, "revoked"])
def test_a_missing_or_revoked_key_gets_code_13(client: httpx.Client, key: str | None) -> None:
    # Given a revoked key
    client.post("/_sandbox/config", json={"revoked_tokens": ["revoked"]}).raise_for_status()
    # When an import is sent without a key or with the revoked one
    response = send(client, {"conversions": [conversion()]}, key=key)
    # Then vNative's invalid-key error comes back as a 401 and nothing is recorded
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "error": {"code": 13, "message": "Invalid API Key"},
    }
    assert received(client) == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "conversions is required"),
        ({"conversions": []}, "conversions is required"),
        ({"conversions": {"click_id": "a"}}, "non-empty array"),
        ({"conversions": [conversion(), {"sub1": "x"}]}, "conversions[1].click_id"),
        ({"conversions": [conversion(click_id="  ")]}, "conversions[0].click_id"),
        ({"conversions": [conversion(click_id=7)]}, "conversions[0].click_id"),
        ({"conversions": ["click-1"]}, "conversions[0] must be an object"),
        ({"conversions": [conversion(custom_dimensions=[1])]}, "custom_dimensions must be"),
        ({"conversions": [conversion()], "send_postback": "yes"}, "send_postback must be"),
        (["not", "an", "object"], "JSON object"),
        (b"{nope", "JSON object"),
    ],
)
def test_parameter_errors_get_code_20_naming_the_problem(
    client: httpx.Client, body: object, named: str
) -> None:
    # When a malformed import is sent
    response = send(client, body)
    # Then it is refused with code 20, the message naming the problem, and nothing recorded
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 20
    assert error["message"].startswith("Request Parameter Error: ")
    assert named in error["message"]
    assert received(client) == []


def test_more_conversions_than_the_cap_get_code_20(client: httpx.Client) -> None:
    # Given the default cap of 500 conversions per call
    # When 501 are sent, then exactly 500
    over = send(client, {"conversions": [conversion(i) for i in range(501)]})
    at = send(client, {"conversions": [conversion(i) for i in range(500)]})
    # Then the first is refused naming the cap and the second is accepted
    assert over.status_code == 400
    assert "at most 500 conversions" in over.json()["error"]["message"]
    assert at.status_code == 200
    # And the cap is a switch
    assert switches(client, max_conversions=2).json()["max_conversions"] == 2
    assert send(client, {"conversions": [conversion(i) for i in range(3)]}).status_code == 400


def test_the_cap_is_a_make_app_option() -> None:
    running = serve(lambda: vnative.make_app(max_conversions=1))
    with httpx.Client(base_url=running.url) as http:
        response = send(http, {"conversions": [conversion(0), conversion(1)]})
    running.stop()
    assert "at most 1 conversions" in response.json()["error"]["message"]


def test_calls_beyond_the_rate_limit_get_code_40_per_key(client: httpx.Client) -> None:
    # Given a limit of 2 calls per key per minute
    client.post("/_sandbox/config", json={"rate_limit": 2}).raise_for_status()
    body = {"conversions": [conversion()]}
    # When one key makes three calls and another key one
    statuses = [send(client, body).status_code for _ in range(3)]
    third = send(client, body)
    other = send(client, body, key="key-other")
    # Then the key's third and fourth are throttled with code 40; the other key is not
    assert statuses == [200, 200, 429]
    assert third.json() == {"success": False, "error": {"code": 40, "message": "Too Many Request"}}
    assert other.status_code == 200


def test_a_job_advances_pending_progress_completed_on_successive_polls(
    client: httpx.Client,
) -> None:
    # Given an import of three conversions
    job_id = job_of(send(client, {"conversions": [conversion(i) for i in range(3)]}))
    # When the job is polled three times
    answers = [poll(client, job_id).json() for _ in range(3)]
    # Then it is in progress, then completed with vNative's logs line, and stays completed
    assert [a["data"]["job"]["status"] for a in answers] == ["progress", "completed", "completed"]
    assert answers[0]["data"]["logs"] == []
    [log] = answers[1]["data"]["logs"]
    assert log["message"] == "Total Processed: 3 | Imported: 3 | Edited: 0 | Errors: 0"
    assert answers[1]["data"]["job"]["_id"] == job_id


def test_another_keys_job_and_an_unknown_job_are_not_found(client: httpx.Client) -> None:
    job_id = job_of(send(client, {"conversions": [conversion()]}))
    for response in (poll(client, job_id, key="key-other"), poll(client, "0" * 24)):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == 31


def test_switches_fail_the_next_job_and_count_click_ids_as_errors(client: httpx.Client) -> None:
    # Given the next job fails and click-1 counts as an error
    switches(client, fail_next_jobs=1, error_click_ids=["click-1"]).raise_for_status()
    conversions = {"conversions": [conversion(i) for i in range(3)]}
    # When two imports are sent and each is polled twice
    failed_id, counted_id = (job_of(send(client, conversions)) for _ in "ab")
    failed = [poll(client, failed_id).json()["data"] for _ in "ab"][-1]
    counted = [poll(client, counted_id).json()["data"] for _ in "ab"][-1]
    # Then the first ends failed, with logs saying so, and the second completes with 1 error
    assert failed["job"]["status"] == "failed"
    assert "Import failed" in " ".join(log["message"] for log in failed["logs"])
    assert counted["job"]["status"] == "completed"
    assert counted["logs"][0]["message"].endswith("Imported: 2 | Edited: 0 | Errors: 1")


def test_bad_switches_are_refused(client: httpx.Client) -> None:
    for bad in ({"fail_next_jobs": -1}, {"max_conversions": 0}, {"error_click_ids": [1]}, {"x": 1}):
        assert switches(client, **bad).status_code == 400
    defaults = {"max_conversions": 500, "fail_next_jobs": 0, "error_click_ids": []}
    assert client.get("/_sandbox/vnative/config").json() == defaults


def test_the_jobs_list_shows_the_keys_latest_50_newest_first(client: httpx.Client) -> None:
    # Given 52 imports by one key and one by another
    client.post("/_sandbox/config", json={"rate_limit": None}).raise_for_status()
    ids = [job_of(send(client, {"conversions": [conversion(i)]})) for i in range(52)]
    send(client, {"conversions": [conversion()]}, key="key-other")
    # When the key lists its jobs
    jobs = client.get("/jobs", headers={"X-Api-Key": KEY}).json()["data"]["jobs"]
    # Then it sees its latest 50, newest first, pending
    assert [job["_id"] for job in jobs] == ids[::-1][:50]
    assert {job["status"] for job in jobs} == {"pending"}


def test_send_postback_is_kept_per_job_for_the_control_api(client: httpx.Client) -> None:
    send(client, {"conversions": [conversion(1)], "send_postback": True})
    send(client, {"conversions": [conversion(2)]})
    jobs = client.get("/_sandbox/vnative/jobs").json()
    assert [job["send_postback"] for job in jobs] == [False, True]
    assert all(KEY not in str(job) for job in jobs)


def test_injected_faults_use_vnatives_error_bodies(client: httpx.Client) -> None:
    client.post("/_sandbox/faults", json={"status": 503}).raise_for_status()
    response = send(client, {"conversions": [conversion()]})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == 50
    assert received(client) == []


def test_the_key_may_come_as_a_query_parameter(client: httpx.Client) -> None:
    response = send(client, {"conversions": [conversion()]}, key=None, params={"apiKey": KEY})
    assert response.status_code == 200
    assert KEY not in str(received(client))


def test_a_wrong_path_is_a_404(client: httpx.Client) -> None:
    response = client.post("/conversion-import", json={}, headers={"X-Api-Key": KEY})
    assert response.status_code == 404
