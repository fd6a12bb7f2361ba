"""Yandex Metrica end to end: real Redis, real Celery worker processes, the Yandex sandbox."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher import Dispatcher, InvalidEventError, keys
from dispatcher.settings import Route
from sandboxes.base import fingerprint
from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_stack
from tests.pipeline.events import full_conversion
from workers import jobs

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]

WORKERS = 4  # more workers than Yandex's 3 parallel requests, so the cap has work to do
# Four counters on one token: one user, so one daily quota and one parallel cap.
DESTINATIONS: dict[str, dict[str, str]] = {
    **{
        f"ym-{c}": {"platform": "yandex", "token": "token-a", "counter_id": f"100{i}"}
        for i, c in enumerate("abcd")
    },
    "ym-user": {
        "platform": "yandex",
        "token": "token-u",
        "counter_id": "2001",
        "client_id_type": "USER_ID",
    },
}
CONFIG = {
    # workers/app.py sets the soft time limit to max(1 s, limit - 5 s): keep it above the
    # drains that wait out a 1 s timeout or a 2 s quota block.
    "yandex": {
        "batch_size": 5,
        "max_wait_s": 0.3,
        "rate_per_min": 60_000,
        "burst": 50,
        "backoff_base_s": 0.2,
        "timeout_s": 1.0,
        "job_poll_interval_s": 0.3,
        "lookup_delay_s": 0.5,
    },
    "destinations": DESTINATIONS,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    config = json.loads(json.dumps(CONFIG))
    yield from start_stack(
        tmp_path_factory.mktemp("yandex"), redis_url, config, WORKERS, platform="yandex"
    )


@pytest.fixture(autouse=True)
def settle(stack: Stack) -> Iterator[None]:
    """After each test, let every upload finish being followed, so no late poll of one test
    takes the next test's injected fault or writes into its dead letters."""
    yield
    stack.sandbox.control("config", {"latency_s": 0.0})  # slow polls would outlive the test
    wait_for(
        lambda: (
            stack.redis.zcard(keys.open_jobs("yandex")) == 0
            and not any(stack.backlog(name) for name in DESTINATIONS)
        ),
        60,
        "the uploads to be followed to their end",
    )


def conversions(
    n: int, prefix: str, column: str = "ClientId", **extra: Any
) -> list[dict[str, Any]]:
    """`n` valid rows a minute old, identified `<prefix>.<i>` so tests can match what arrived."""
    at = int(time.time()) - 60
    return [{column: f"{prefix}.{i}", "Target": "paid", "DateTime": at, **extra} for i in range(n)]


def rows(stack: Stack, column: str = "ClientId") -> list[str]:
    return [row[column] for row in stack.sandbox.get("events") if column in row]


def uploads(stack: Stack) -> list[dict[str, Any]]:
    """Accepted uploads: `query` (client_id_type, comment) and `events` (the rows)."""
    return list(stack.sandbox.get("received"))


def upload_statuses(stack: Stack) -> list[int]:
    return [c["status"] for c in stack.sandbox.calls() if c["path"].endswith("/upload")]


def switch(stack: Stack, **switches: Any) -> None:
    stack.sandbox.control("yandex/config", switches)


def quota_error(status: int, kind: str) -> dict[str, Any]:
    return {"errors": [{"error_type": kind, "message": kind}], "code": status, "message": kind}


def worker_logs(stack: Stack) -> str:
    return "".join(stack.procs.log(f"worker{i}") for i in range(WORKERS))


def the_job(stack: Stack, state: str) -> jobs.Job | None:
    found = [job for job in jobs.recent(stack.redis, "yandex") if job.state == state]
    return found[0] if len(found) == 1 else None


def test_uploads_are_cut_at_the_configured_batch_size(stack: Stack) -> None:
    # Given 12 rows for one counter and a batch size of 5
    stack.dispatcher.enqueue_many(conversions(12, "cut"), "ym-a")
    # When the workers deliver them
    wait_for(lambda: len(rows(stack)) >= 12, 30, "12 rows to arrive")
    # Then they arrived as uploads of 5, 5 and 2, each row once, each upload with its own comment
    sent = uploads(stack)
    assert sorted(len(u["events"]) for u in sent) == [2, 5, 5]
    assert Counter(rows(stack)) == Counter(f"cut.{i}" for i in range(12))
    comments = [u["query"]["comment"] for u in sent]
    assert len(set(comments)) == 3
    assert all(u["query"]["client_id_type"] == "CLIENT_ID" for u in sent)
    wait_for(lambda: stack.backlog("ym-a") == 0, 10, "the stream to empty")


def test_a_user_id_counter_uploads_user_ids(stack: Stack) -> None:
    stack.dispatcher.enqueue_many(conversions(2, "user", column="UserId"), "ym-user")
    wait_for(lambda: len(rows(stack, "UserId")) == 2, 30, "2 rows to arrive")
    (sent,) = uploads(stack)
    assert sent["query"]["client_id_type"] == "USER_ID"
    assert sorted(rows(stack, "UserId")) == ["user.0", "user.1"]


def test_an_upload_is_recorded_as_a_job_and_tracked_to_processed(stack: Stack) -> None:
    # Given 3 rows
    stack.dispatcher.enqueue_many(conversions(3, "job"), "ym-a")
    # When they are uploaded and the upload is followed
    job = wait_for(lambda: the_job(stack, "PROCESSED"), 30, "the upload to be PROCESSED")
    # Then the job is Yandex's upload, with its 3 events, finished without failure
    assert isinstance(job, jobs.Job)
    (sent,) = uploads(stack)
    assert job.batch_id == sent["query"]["comment"]
    assert (job.destination, job.events, job.finished, job.failed) == ("ym-a", 3, True, False)
    assert job.detail == "line_quantity 3 of source_quantity 3"
    listed = httpx.get(
        f"{stack.sandbox.url}/management/v1/counter/1000/offline_conversions/uploadings",
        headers={"Authorization": "OAuth token-a"},
        timeout=10,
    ).json()["uploadings"]
    assert [str(u["id"]) for u in listed] == [job.id]
    assert stack.dead.count("yandex") == 0


def test_a_linkage_failure_dead_letters_the_events_with_the_status(stack: Stack) -> None:
    # Given Yandex will fail to link the next uploads
    switch(stack, linkage_failure=True)
    receipts = stack.dispatcher.enqueue_many(conversions(2, "unlinked"), "ym-b").receipts
    # When the upload is accepted and then followed to its end
    wait_for(lambda: stack.dead.count("yandex") == 2, 30, "2 dead letters")
    # Then both events are dead letters naming the status, though Yandex had accepted them
    letters = stack.dead.list("yandex")
    assert len(letters) == 2
    assert {letter.event_id for letter in letters} == {r.event_id for r in receipts}
    assert all("LINKAGE_FAILURE" in letter.reason for letter in letters)
    assert {letter.event["ClientId"] for letter in letters} == {"unlinked.0", "unlinked.1"}
    job = the_job(stack, "LINKAGE_FAILURE")
    assert job is not None
    assert job.failed
    assert stack.backlog("ym-b") == 0


def test_rows_yandex_drops_are_surfaced(stack: Stack) -> None:
    # Given a goal the counter no longer has
    switch(stack, unknown_goals=["retired"])
    events = conversions(2, "kept") + conversions(1, "dropped", Target="retired")
    # When 3 rows are uploaded, one for that goal
    stack.dispatcher.enqueue_many(events, "ym-c")
    # Then the job records that Yandex kept 2 of 3, and a worker logs it as a warning
    job = wait_for(lambda: the_job(stack, "PROCESSED"), 30, "the upload to be processed")
    assert isinstance(job, jobs.Job)
    assert job.detail == "line_quantity 2 of source_quantity 3"
    wait_for(lambda: "rejected 1 of 3 rows" in worker_logs(stack), 10, "the warning")
    assert sorted(rows(stack)) == ["kept.0", "kept.1"]


def test_quota_errors_are_retried_without_loss(stack: Stack) -> None:
    # Given Yandex refuses two uploads: parallel requests (429), then the IP quota (420)
    stack.sandbox.control(
        "faults", {"status": 429, "body": quota_error(429, "quota_parallel_requests")}
    )
    stack.sandbox.control(
        "faults", {"status": 420, "body": quota_error(420, "quota_requests_by_ip")}
    )
    # When 4 rows are enqueued
    stack.dispatcher.enqueue_many(conversions(4, "quota"), "ym-a")
    # Then the third attempt delivers all 4, and nothing is dead-lettered
    wait_for(lambda: len(rows(stack)) == 4, 30, "delivery after the quota errors")
    assert upload_statuses(stack) == [429, 420, 200]
    assert sorted(rows(stack)) == [f"quota.{i}" for i in range(4)]
    assert stack.dead.count("yandex") == 0


def test_the_daily_quota_stops_every_counter_of_the_user_until_retry_after(stack: Stack) -> None:
    # Given the user's daily quota ran out on an upload for one counter, with Retry-After: 2
    body = quota_error(429, "quota_requests_by_uid")
    stack.sandbox.control("faults", {"status": 429, "retry_after": "2", "body": body})
    stack.dispatcher.enqueue_many(conversions(5, "day-a"), "ym-a")
    wait_for(lambda: 429 in upload_statuses(stack), 30, "the quota error")
    # When another counter of that user gets work
    stack.dispatcher.enqueue_many(conversions(5, "day-b"), "ym-b")
    wait_for(lambda: len(rows(stack)) == 10, 30, "10 rows")
    # Then no call of that user, for either counter, came within 2 s of the 429
    calls = stack.sandbox.calls()
    (refused_at,) = [c["at_s"] for c in calls if c["status"] == 429]
    later = [c["at_s"] for c in calls if c["at_s"] > refused_at]
    assert later
    assert min(later) - refused_at >= 1.9
    assert stack.dead.count("yandex") == 0


def test_at_most_three_uploads_of_one_user_are_in_flight(stack: Stack) -> None:
    # Given every call takes 0.5 s, and four counters of one user have two uploads each
    stack.sandbox.control("config", {"latency_s": 0.5})
    for c in "abcd":
        stack.dispatcher.enqueue_many(conversions(10, f"par-{c}"), f"ym-{c}")
    # When four workers deliver them
    wait_for(lambda: len(rows(stack)) >= 40, 60, "40 rows")
    # Then never more than 3 uploads of that user were in progress at Yandex, yet they overlapped
    peak = stack.sandbox.get("yandex/config")["peak_uploads"][fingerprint("token-a")]
    assert 2 <= peak <= 3
    # And every row arrived exactly once (a parallel-quota refusal, if any, was retried)
    assert Counter(rows(stack)) == Counter(f"par-{c}.{i}" for c in "abcd" for i in range(10))
    assert stack.dead.count("yandex") == 0


def test_an_upload_that_timed_out_but_arrived_is_not_sent_twice(stack: Stack) -> None:
    # Given Yandex takes the next upload but answers only after the client's 1 s timeout
    stack.sandbox.control("faults", {"status": 0, "delay_s": 1.4})
    # When 3 rows are enqueued
    stack.dispatcher.enqueue_many(conversions(3, "late"), "ym-d")
    # Then the worker finds the upload by its comment instead of uploading again
    wait_for(lambda: stack.backlog("ym-d") == 0, 30, "the stream to empty")
    job = wait_for(lambda: the_job(stack, "PROCESSED"), 30, "the found upload to be processed")
    assert isinstance(job, jobs.Job)
    (sent,) = uploads(stack)
    assert sent["query"]["comment"] == job.batch_id
    assert sorted(rows(stack)) == ["late.0", "late.1", "late.2"]
    assert upload_statuses(stack) == [200]
    assert "had reached the platform" in worker_logs(stack)


def test_bad_input_is_rejected_at_enqueue_naming_the_field(stack: Stack) -> None:
    # Given a row with a comma in its goal, and a row identified the wrong way for its counter
    bad_goal = conversions(1, "bad", Target="paid,twice")
    wrong_id = conversions(1, "bad", column="UserId")
    # When each is enqueued, Then it is refused naming the field, and nothing is stored
    with pytest.raises(InvalidEventError) as goal:
        stack.dispatcher.enqueue_many(bad_goal, "ym-a")
    assert goal.value.fields == ["Target"]
    with pytest.raises(InvalidEventError) as column:
        stack.dispatcher.enqueue_many(wrong_id, "ym-a")
    assert column.value.fields == ["UserId"]
    assert stack.backlog("ym-a") == 0
    assert uploads(stack) == []


def test_a_worker_killed_after_yandex_took_the_upload_does_not_upload_it_again(
    stack: Stack,
) -> None:
    # Given Yandex answers slowly, so an upload is in flight
    stack.sandbox.control("config", {"latency_s": 0.8})
    stack.dispatcher.enqueue_many(conversions(3, "crash"), "ym-b")
    pid = wait_for(lambda: stack.holder_pid("ym-b"), 30, "an upload in flight")
    # When the process holding it is SIGKILLed, and Yandex still takes the upload
    os.kill(int(str(pid)), signal.SIGKILL)
    wait_for(lambda: upload_statuses(stack) == [200], 30, "Yandex to take the upload")
    stack.sandbox.control("config", {"latency_s": 0.0})
    # Then the next drain finds it in the upload list and sends nothing again
    wait_for(lambda: stack.backlog("ym-b") == 0, 30, "the stream to empty")
    assert upload_statuses(stack) == [200]
    assert sorted(rows(stack)) == ["crash.0", "crash.1", "crash.2"]
    assert stack.counter("ym-b", "delivered") == 3
    assert not stack.redis.hlen(keys.sending("ym-b"))


def test_a_failed_lookup_backs_off_and_never_uploads_twice(stack: Stack) -> None:
    # Given Yandex takes an upload but its answer is lost (after the 1 s client timeout),
    # and the first two listings of uploads fail (503, then a timeout)
    stack.sandbox.control("faults", {"status": 0, "delay_s": 1.4})
    stack.sandbox.control("faults", {"status": 503})
    stack.sandbox.control("faults", {"status": 0, "delay_s": 1.4})
    # When 3 rows are enqueued
    stack.dispatcher.enqueue_many(conversions(3, "lost"), "ym-c")
    # Then the batch is resolved by the listing that works, uploaded exactly once
    wait_for(lambda: stack.backlog("ym-c") == 0, 60, "the stream to empty")
    listings = [c for c in stack.sandbox.calls() if c["path"].endswith("/uploadings")]
    assert len(listings) >= 1
    assert upload_statuses(stack) == [200]
    assert sorted(rows(stack)) == ["lost.0", "lost.1", "lost.2"]
    assert stack.dead.count("yandex") == 0


def test_a_routes_fixed_price_and_an_events_own_reach_the_upload(stack: Stack) -> None:
    # Given a route with a fixed Price, and conversions with and without a value of their own
    routes = [Route(event="purchase", destination="ym-a", target="paid", value="5", currency="RUB")]
    with Dispatcher(stack.settings.model_copy(update={"routes": routes})) as producer:
        producer.enqueue_conversion(full_conversion())
        producer.enqueue_conversion(
            full_conversion(
                value=None, currency=None, yandex_client_id="157000000.2", event_id="order-1002"
            )
        )
    # When they are uploaded
    wait_for(lambda: len(rows(stack)) == 2, 30, "both rows")
    # Then each row carries its own value, or the route's when it had none
    prices = {
        r["ClientId"]: (r.get("Price"), r.get("Currency")) for r in stack.sandbox.get("events")
    }
    assert prices == {"157000000.1": ("49.90", "EUR"), "157000000.2": ("5", "RUB")}


def test_priced_and_unpriced_rows_go_as_separate_uploads_with_no_empty_cell(stack: Stack) -> None:
    # Given 4 rows that fit one batch (5), two with a price and two without, interleaved
    # (the sandbox, like a strict reading of the docs, refuses a row with an empty Price)
    priced = conversions(2, "priced", Price="12.50", Currency="EUR")
    plain = conversions(2, "plain")
    stack.dispatcher.enqueue_many([plain[0], priced[0], plain[1], priced[1]], "ym-a")
    # When the workers deliver them
    wait_for(lambda: len(rows(stack)) == 4, 30, "4 rows to arrive")
    # Then they went as two uploads, one per column set, and Yandex took every row
    sent = sorted(uploads(stack), key=lambda u: len(u["events"][0]))
    assert [sorted(r["ClientId"] for r in u["events"]) for u in sent] == [
        ["plain.0", "plain.1"],
        ["priced.0", "priced.1"],
    ]
    assert all(r.get("Price") == "12.50" for r in sent[1]["events"])
    assert not stack.redis.xlen(keys.deadletters("yandex"))
    assert upload_statuses(stack) == [200, 200]
