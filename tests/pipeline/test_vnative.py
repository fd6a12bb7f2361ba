"""vNative end to end: real Redis, real Celery worker processes, the vNative sandbox."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import Dispatcher, InvalidEventError, keys
from dispatcher.settings import Route
from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_stack
from tests.pipeline.events import full_conversion
from workers import jobs

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]

IMPORT = "/advertiser/conversion-import"
CONFIG = {
    # The soft time limit is 80% of the hard one: keep drains unhurried.
    "vnative": {
        "batch_size": 5,
        "max_wait_s": 0.3,
        "rate_per_min": 60_000,
        "burst": 50,
        "backoff_base_s": 0.2,
        "backoff_cap_s": 1.0,
        "timeout_s": 3.0,
        "job_poll_interval_s": 0.2,
    },
    "destinations": {
        "vn-a": {"platform": "vnative", "token": "key-a"},
        "vn-b": {"platform": "vnative", "token": "key-b", "send_postback": True},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    config = json.loads(json.dumps(CONFIG))
    yield from start_stack(
        tmp_path_factory.mktemp("vnative"), redis_url, config, platform="vnative"
    )


@pytest.fixture(autouse=True)
def unthrottled(stack: Stack, fresh: None) -> Iterator[None]:
    """The sandbox's default 60 calls per key per minute would throttle the job polls."""
    stack.sandbox.control("config", {"rate_limit": None})
    yield
    # A poll still in flight when the next test flushes Redis would re-create its job.
    wait_for(lambda: not stack.redis.zcard(keys.open_jobs("vnative")), 30, "open jobs to finish")


def conversions(n: int, prefix: str) -> list[dict[str, Any]]:
    return [{"click_id": f"{prefix}-{i}", "sub1": "pipeline"} for i in range(n)]


def clicks(stack: Stack) -> list[str]:
    return stack.sandbox.event_ids("click_id")


def import_statuses(stack: Stack) -> list[int]:
    return [c["status"] for c in stack.sandbox.calls() if c["path"] == IMPORT]


def sandbox_jobs(stack: Stack) -> list[dict[str, Any]]:
    return list(stack.sandbox.get("vnative/jobs"))


def finished_jobs(stack: Stack) -> list[jobs.Job]:
    return [job for job in jobs.recent(stack.redis, "vnative") if job.finished]


def the_finished_job(stack: Stack) -> jobs.Job:
    """Wait for the one job of the test to finish."""
    wait_for(lambda: finished_jobs(stack), 30, "the job to finish")
    [job] = finished_jobs(stack)
    return job


def test_events_are_imported_in_batches_of_the_configured_size(stack: Stack) -> None:
    # Given 12 conversions enqueued at once, with batch_size 5
    stack.dispatcher.enqueue_many(conversions(12, "batch"), "vn-a")
    # When the workers drain them
    wait_for(lambda: len(clicks(stack)) >= 12, 30, "12 conversions to arrive")
    # Then vNative got two full imports and one of two, each conversion exactly once
    sizes = [call["n_events"] for call in stack.sandbox.get("received?summary=1")["calls"]]
    assert sorted(sizes) == [2, 5, 5]
    assert Counter(clicks(stack)) == Counter(f"batch-{i}" for i in range(12))
    # (the platform records a call before the worker settles it)
    wait_for(lambda: stack.backlog("vn-a") == 0, 30, "the stream to empty")


def test_the_import_job_is_recorded_and_followed_to_completed(stack: Stack) -> None:
    # Given three conversions
    receipts = stack.dispatcher.enqueue_many(conversions(3, "job"), "vn-a").receipts
    # When they are imported and the workers follow the job
    job = the_finished_job(stack)
    # Then the job vNative created is recorded as completed with its logs line
    [created] = sandbox_jobs(stack)
    assert job.id == created["_id"]
    assert (job.state, job.failed, job.events, job.destination) == ("completed", False, 3, "vn-a")
    assert job.detail == "Total Processed: 3 | Imported: 3 | Edited: 0 | Errors: 0"
    # And the events left the stream, none dead-lettered
    assert stack.backlog("vn-a") == 0
    assert stack.dead.count("vnative") == 0
    assert stack.redis.llen(keys.job_events("vnative", job.id)) == 0
    assert len(receipts) == 3


def test_a_completed_job_with_errors_says_so_and_dead_letters_nothing(stack: Stack) -> None:
    # Given vNative will count one click as an error
    stack.sandbox.control("vnative/config", {"error_click_ids": ["errs-1"]})
    stack.dispatcher.enqueue_many(conversions(3, "errs"), "vn-a")
    # When the job finishes
    job = the_finished_job(stack)
    # Then it is completed, its detail says one conversion had errors, and nothing is lost
    assert (job.state, job.failed) == ("completed", False)
    assert "Errors: 1" in job.detail
    assert "1 conversion(s) had errors" in job.detail
    assert stack.dead.count("vnative") == 0


def test_a_failed_job_dead_letters_its_events_with_the_jobs_logs(stack: Stack) -> None:
    # Given vNative will fail the next import job
    stack.sandbox.control("vnative/config", {"fail_next_jobs": 1})
    receipts = stack.dispatcher.enqueue_many(conversions(3, "fail"), "vn-a").receipts
    # When it is imported and the job fails
    wait_for(lambda: stack.dead.count("vnative") == 3, 30, "three dead letters")
    # Then each event is a dead letter naming the job and quoting its logs
    [job] = finished_jobs(stack)
    letters = stack.dead.list("vnative")
    assert {letter.event_id for letter in letters} == {r.event_id for r in receipts}
    for letter in letters:
        assert letter.reason.startswith(f"vnative job {job.id} finished failed: ")
        assert "Total Processed: 3" in letter.reason
        assert letter.destination == "vn-a"
    assert {letter.event["click_id"] for letter in letters} == {"fail-0", "fail-1", "fail-2"}
    assert (job.state, job.failed) == ("failed", True)


def test_code_40_throttling_is_retried_without_loss(stack: Stack) -> None:
    # Given vNative answers "too many requests" twice as a 429 and once inside a 200
    stack.sandbox.control("faults", {"status": 429, "count": 2, "retry_after": "0"})
    code_40 = {"success": False, "error": {"code": 40, "message": "Too Many Request"}}
    stack.sandbox.control("faults", {"status": 200, "body": code_40})
    # When four conversions are enqueued
    stack.dispatcher.enqueue_many(conversions(4, "slow"), "vn-a")
    # Then after three throttled calls one import delivers all four, once each
    wait_for(lambda: len(clicks(stack)) == 4, 30, "delivery after throttling")
    assert import_statuses(stack) == [429, 429, 200, 200]
    assert sorted(clicks(stack)) == [f"slow-{i}" for i in range(4)]
    assert stack.dead.count("vnative") == 0


def test_5xx_outages_are_retried_without_loss(stack: Stack) -> None:
    # Given vNative answers 503, 503 and 500
    stack.sandbox.control("faults", {"status": 503, "count": 2})
    stack.sandbox.control("faults", {"status": 500})
    # When five conversions are enqueued
    stack.dispatcher.enqueue_many(conversions(5, "outage"), "vn-a")
    # Then the fourth call imports all five, nothing is dead-lettered, failures reset
    wait_for(lambda: len(clicks(stack)) == 5, 30, "delivery after the outage")
    assert import_statuses(stack) == [503, 503, 500, 200]
    assert stack.dead.count("vnative") == 0
    wait_for(lambda: finished_jobs(stack), 30, "the job to finish")
    assert stack.redis.hget(keys.state("vn-a"), "failures") == b"0"


def test_a_401_pauses_the_destination_without_loss_until_resumed(stack: Stack) -> None:
    # Given vNative no longer accepts vn-b's key
    stack.sandbox.control("config", {"revoked_tokens": ["key-b"]})
    stack.dispatcher.enqueue_many(conversions(6, "paused"), "vn-b")
    # When a worker tries to deliver
    wait_for(lambda: stack.control.status("vn-b").paused, 30, "vn-b to pause")
    # Then vn-b is paused saying why, nothing was imported, and all six wait
    status = stack.control.status("vn-b")
    assert "invalid API key (code 13)" in status.pause_reason
    assert status.backlog == 6
    assert clicks(stack) == []
    # And once the key works again and an operator resumes, all six arrive
    stack.sandbox.control("config", {"revoked_tokens": []})
    stack.control.resume("vn-b")
    wait_for(lambda: len(clicks(stack)) == 6, 60, "the six conversions")
    # (vNative records an import before the worker has read the answer and settled it)
    wait_for(lambda: stack.backlog("vn-b") == 0, 30, "the stream to empty")


def test_a_parameter_error_dead_letters_the_batch_with_vnatives_message(stack: Stack) -> None:
    # Given vNative refuses the next import with code 20 (a rule the model does not know)
    message = "Request Parameter Error: conversions[0].sub1 is too long"
    stack.sandbox.control(
        "faults",
        {"status": 400, "body": {"success": False, "error": {"code": 20, "message": message}}},
    )
    stack.dispatcher.enqueue_many(conversions(2, "refused"), "vn-a")
    # Then both events are dead letters carrying the message, and nothing else is lost
    wait_for(lambda: stack.dead.count("vnative") == 2, 30, "two dead letters")
    for letter in stack.dead.list("vnative"):
        assert letter.reason == f"parameter error (code 20): {message}"
        assert letter.status == 400
    assert stack.backlog("vn-a") == 0


def test_bad_input_is_refused_at_enqueue_naming_the_field(stack: Stack) -> None:
    # When conversions without a click id or with an email in free text are enqueued
    with pytest.raises(InvalidEventError) as caught:
        stack.dispatcher.enqueue_many(
            [{"click_id": ""}, {"click_id": "c", "sub2": "for jane@example.com"}], "vn-a"
        )
    # Then each bad field is named, and nothing was stored or sent
    assert caught.value.fields == ["click_id", "sub2"]
    assert stack.backlog("vn-a") == 0
    assert stack.sandbox.calls() == []


def test_send_postback_reaches_vnative_as_configured_per_destination(stack: Stack) -> None:
    # Given vn-a sends no postbacks and vn-b does
    # When one conversion goes to vn-a and two to vn-b
    stack.dispatcher.enqueue_many(conversions(1, "quiet"), "vn-a")
    stack.dispatcher.enqueue_many(conversions(2, "loud"), "vn-b")
    wait_for(lambda: len(sandbox_jobs(stack)) == 2, 30, "two imports")
    # Then each import job carries its destination's send_postback
    postbacks = {job["events"]: job["send_postback"] for job in sandbox_jobs(stack)}
    assert postbacks == {1: False, 2: True}
    wait_for(lambda: len(finished_jobs(stack)) == 2, 30, "both jobs to finish")


def test_an_events_subs_and_the_routes_reach_the_import(stack: Stack) -> None:
    # Given a route with static subs and a conversion with subs of its own
    routes = [Route(event="purchase", destination="vn-a", sub1="shop", sub4="route")]
    with Dispatcher(stack.settings.model_copy(update={"routes": routes})) as producer:
        assert producer.enqueue_conversion(full_conversion()).skipped == []
    # When it is imported, the event's sub4 and sub10 won over the route's, sub1 is the route's
    wait_for(lambda: len(stack.sandbox.get("events")) == 1, 30, "the conversion")
    (event,) = stack.sandbox.get("events")
    assert (event["sub1"], event["sub4"], event["sub10"]) == ("shop", "newsletter", "x")
    assert event["click_id"] == "5aae975a9b155cccddccefbe"
