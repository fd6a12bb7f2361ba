"""The pipeline end to end: real Redis, real Celery worker processes, the LinkedIn sandbox."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from dispatcher import BackpressureError, Destination, Dispatcher, keys
from dispatcher.identity import hash_email
from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_stack
from tests.pipeline.events import linkedin, many
from workers.metrics import registry

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]

CONFIG = {
    "linkedin": {
        "max_wait_s": 0.3,
        "rate_per_min": 60_000,
        "backoff_base_s": 0.2,
        "timeout_s": 3.0,
        "max_attempts": 4,
    },
    "destinations": {
        "li-a": {"platform": "linkedin", "token": "token-a"},
        "li-b": {"platform": "linkedin", "token": "token-b"},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    yield from start_stack(
        tmp_path_factory.mktemp("delivery"), redis_url, json.loads(json.dumps(CONFIG))
    )


def accepted_batches(stack: Stack) -> list[int]:
    return [c["n_events"] for c in stack.sandbox.get("received?summary=1")["calls"]]


def test_10001_events_arrive_as_5000_5000_and_1(stack: Stack) -> None:
    # Given 10,001 events enqueued at once
    stack.dispatcher.enqueue_many(many(10_001), "li-a")
    # When the workers drain them
    wait_for(lambda: sum(accepted_batches(stack)) >= 10_001, 60, "10,001 events to arrive")
    # Then the sandbox took two full batches and one of one, each event exactly once
    assert sorted(accepted_batches(stack)) == [1, 5000, 5000]
    ids = Counter(stack.sandbox.event_ids())
    assert len(ids) == 10_001
    assert set(ids.values()) == {1}
    # (the platform records a call before the worker settles it)
    wait_for(lambda: stack.backlog("li-a") == 0, 30, "the stream to empty")


def test_one_invalid_element_is_dead_lettered_and_the_other_4999_delivered(stack: Stack) -> None:
    # Given a batch of 5000 whose element 1234 LinkedIn refuses (a bad email hash that an
    # older producer let through), written straight to the stream
    rows = []
    for i in range(5000):
        body = linkedin(i, "batch")
        user_id = body["user"]["userIds"][0]
        user_id["idValue"] = "not-a-sha256" if i == 1234 else hash_email(user_id["idValue"])
        rows.append((body["eventId"], json.dumps(body).encode(), body["conversionHappenedAt"]))
    assert not stack.dispatcher.write({"li-a": rows})  # rows past validation, as stored
    # When it is delivered
    wait_for(lambda: stack.dead.count("linkedin") == 1 and stack.backlog("li-a") == 0, 60, "drain")
    # Then exactly element 1234 is a dead letter, with LinkedIn's reason, and the rest arrived
    (letter,) = stack.dead.list("linkedin")
    assert letter.event_id == "batch-1234"
    assert letter.status == 400
    assert "batchIndex=1234" in letter.reason
    delivered = stack.sandbox.event_ids()
    assert len(delivered) == 4999
    assert "batch-1234" not in delivered
    assert set(delivered) == {f"batch-{i}" for i in range(5000)} - {"batch-1234"}


def test_a_dead_letter_replayed_is_delivered(stack: Stack) -> None:
    # Given an event LinkedIn refused once (injected), now sitting in the dead-letter stream
    message = "Validation failed because [{field=x, batchIndex=0, type=T, message=refused}]"
    stack.sandbox.control("faults", {"status": 400, "body": {"message": message, "status": 400}})
    stack.dispatcher.enqueue(linkedin(1, "replay"), "li-a")
    wait_for(lambda: stack.dead.count("linkedin") == 1, 30, "the dead letter")
    assert stack.sandbox.event_ids() == []
    # When an operator replays it
    assert stack.dead.replay("linkedin") == 1
    # Then it is delivered with its original event id and leaves the dead-letter stream
    wait_for(lambda: stack.sandbox.event_ids() == ["replay-1"], 30, "the replayed event")
    assert stack.dead.count("linkedin") == 0


def test_401_pauses_the_destination_without_losing_events_until_resumed(stack: Stack) -> None:
    # Given LinkedIn revokes destination li-b's token
    stack.sandbox.control("config", {"revoked_tokens": ["token-b"]})
    stack.dispatcher.enqueue_many(many(20, "paused"), "li-b")
    # When a worker tries to deliver
    wait_for(lambda: stack.control.status("li-b").paused, 30, "li-b to pause")
    # Then li-b is paused with the reason, nothing was accepted, and all 20 events wait
    status = stack.control.status("li-b")
    assert "revoked" in status.pause_reason
    assert status.backlog == 20
    assert stack.sandbox.event_ids() == []
    # And when the token works again and an operator resumes, all 20 arrive
    stack.sandbox.control("config", {"revoked_tokens": []})
    stack.control.resume("li-b")
    wait_for(lambda: len(stack.sandbox.event_ids()) == 20, 30, "the 20 events")
    # (the platform records a call before the worker settles it)
    wait_for(lambda: stack.backlog("li-b") == 0, 30, "the stream to empty")


def test_503s_back_off_and_then_succeed(stack: Stack) -> None:
    # Given LinkedIn answers 503 three times
    stack.sandbox.control("faults", {"status": 503, "count": 3})
    # When 5 events are enqueued
    stack.dispatcher.enqueue_many(many(5, "outage"), "li-a")
    # Then after three refused calls one call delivers all 5, and nothing is dead-lettered
    wait_for(lambda: len(stack.sandbox.event_ids()) == 5, 30, "delivery after the outage")
    statuses = [c["status"] for c in stack.sandbox.calls()]
    assert statuses == [503, 503, 503, 200]
    assert stack.dead.count("linkedin") == 0
    # (the sandbox records the call before the worker settles it: wait for the settle)
    wait_for(lambda: stack.redis.hget(keys.state("li-a"), "failures") == b"0", 10, "the reset")


def test_a_timeout_is_retried(stack: Stack) -> None:
    # Given LinkedIn hangs longer than the client's 3 s timeout once
    stack.sandbox.control("faults", {"status": 0, "delay_s": 4.0})
    stack.dispatcher.enqueue(linkedin(1, "slow"), "li-a")
    # Then the client gave up, the event was retried and arrived, and nothing died
    wait_for(lambda: "slow-1" in stack.sandbox.event_ids(), 30, "delivery after a timeout")
    wait_for(lambda: stack.redis.hget(keys.state("li-a"), "retried"), 10, "the retry count")
    assert int(stack.redis.hget(keys.state("li-a"), "retried")) == 1
    assert stack.dead.count("linkedin") == 0


def test_the_lease_holder_killed_mid_batch_is_taken_over_within_5_s(stack: Stack) -> None:
    # Given LinkedIn answers slowly, so a batch is in flight for 2 s
    stack.sandbox.control("config", {"latency_s": 2.0})
    stack.dispatcher.enqueue_many(many(50, "killed"), "li-a")
    pid = wait_for(lambda: stack.holder_pid("li-a"), 30, "a batch in flight")
    # When the process holding the lease and the batch is SIGKILLed
    os.kill(int(str(pid)), signal.SIGKILL)
    killed_at = time.monotonic()
    stack.sandbox.control("config", {"latency_s": 0.0})
    # Then another drain takes the destination over and delivers within 5 s
    wait_for(lambda: stack.backlog("li-a") == 0, 30, "the stream to empty")
    resumed_after_s = time.monotonic() - killed_at
    assert set(stack.sandbox.event_ids()) >= {f"killed-{i}" for i in range(50)}
    assert stack.dead.count("linkedin") == 0
    assert resumed_after_s <= 5.0, f"delivery stopped for {resumed_after_s:.1f} s"


def test_a_drainer_whose_lease_was_taken_over_settles_nothing(stack: Stack) -> None:
    # Given a batch is in flight for 1.5 s
    stack.sandbox.control("config", {"latency_s": 1.5})
    stack.dispatcher.enqueue_many(many(5, "fenced"), "li-a")
    wait_for(lambda: stack.holder_pid("li-a"), 30, "a batch in flight")
    # When another holder takes the lease over before the answer comes back
    stack.redis.set(keys.lease("li-a"), "another-holder", px=4000)
    wait_for(lambda: stack.sandbox.get("count")["events"] >= 5, 30, "LinkedIn to take it")
    stack.sandbox.control("config", {"latency_s": 0.0})
    # Then the first drainer acknowledged nothing (the events are still pending) ...
    assert stack.backlog("li-a") == 5
    assert stack.counter("li-a", "delivered") == 0
    # ... and once the other lease runs out the batch is delivered and counted once
    wait_for(lambda: stack.backlog("li-a") == 0, 30, "the stream to empty")
    assert stack.counter("li-a", "delivered") == 5
    assert stack.dead.count("linkedin") == 0
    assert "lease lost" in stack.procs.log("worker0") + stack.procs.log("worker1")


def test_a_throttling_storm_longer_than_max_attempts_dead_letters_nothing(stack: Stack) -> None:
    # Given LinkedIn throttles 8 calls in a row (max_attempts is 4), each with Retry-After
    stack.sandbox.control("faults", {"status": 429, "count": 8, "retry_after": "0.2"})
    # When 5 events are enqueued
    stack.dispatcher.enqueue_many(many(5, "storm"), "li-a")
    # Then they are delivered after the storm and none is dead-lettered
    wait_for(lambda: stack.backlog("li-a") == 0, 60, "delivery after the storm")
    statuses = [c["status"] for c in stack.sandbox.calls()]
    assert statuses.count(429) == 8
    assert sorted(stack.sandbox.event_ids()) == sorted(f"storm-{i}" for i in range(5))
    assert stack.dead.count("linkedin") == 0


def test_redis_at_its_memory_ceiling_refuses_enqueue_and_workers_drain_it(stack: Stack) -> None:
    # Given LinkedIn is down, so a backlog grows until Redis is past its memory watermark
    stack.sandbox.control("faults", {"status": 503, "count": 1000, "retry_after": "1"})
    used = int(stack.redis.info("memory")["used_memory"])
    stack.redis.config_set("maxmemory", used + 3_000_000)
    try:
        refused = None
        for i in range(200):
            try:
                stack.dispatcher.enqueue_many(many(500, f"full{i}"), "li-b")
            except BackpressureError as exc:
                refused = exc
                break
        assert refused is not None
        assert "maxmemory" in str(refused)
        waiting = stack.backlog("li-b")
        # When LinkedIn comes back
        stack.sandbox.control("reset")
        # Then the workers deliver their way out, and enqueue works again
        wait_for(lambda: stack.backlog("li-b") == 0, 90, "the backlog to drain")
        assert stack.counter("li-b", "delivered") == waiting
        wait_for(lambda: _enqueues(stack), 10, "enqueue to be accepted again")
    finally:
        stack.redis.config_set("maxmemory", 0)


def _enqueues(stack: Stack) -> bool:
    try:
        stack.dispatcher.enqueue_many(many(1, "after"), "li-b")
    except BackpressureError:
        return False
    return True


def test_tasks_carry_no_event_data_or_secrets(stack: Stack, tmp_path: Path) -> None:
    # Given a delivery has run
    stack.dispatcher.enqueue_many(many(3, "secret"), "li-a")
    wait_for(lambda: len(stack.sandbox.event_ids()) == 3, 30, "delivery")
    # Then no worker log mentions a token, an email or an event id
    for name in ("worker0", "worker1"):
        log = stack.procs.log(name)
        assert "token-a" not in log
        assert "user1@example.com" not in log
        assert "secret-1" not in log


def test_events_of_a_removed_destination_show_as_orphans_and_can_be_dead_lettered(
    stack: Stack,
) -> None:
    # Given a producer still configured with a destination the workers no longer have
    old = stack.settings.model_copy(
        update={
            "destinations": {
                **stack.settings.destinations,
                "li-gone": Destination(platform="linkedin", token="token-gone"),
            }
        }
    )
    Dispatcher(old).enqueue_many(many(4, "gone"), "li-gone")
    # When a worker meets it, it stops scheduling it; the events wait, visible as orphans
    wait_for(lambda: stack.redis.sismember(keys.orphans(), "li-gone"), 30, "the orphan")
    assert stack.redis.zscore(keys.due("linkedin"), "li-gone") is None
    (orphan,) = stack.control.orphans()
    assert (orphan.destination, orphan.platform, orphan.backlog) == ("li-gone", "linkedin", 4)
    scrape = generate_latest(registry(stack.settings, stack.redis)).decode()
    assert 'convdispatch_orphaned_backlog{destination="li-gone"} 4.0' in scrape
    # And an operator moves them to the dead letters, with the reason
    assert stack.control.dead_letter_orphan("li-gone") == 4
    assert stack.backlog("li-gone") == 0
    letters = stack.dead.list("linkedin")
    assert {letter.event_id for letter in letters} == {f"gone-{i}" for i in range(4)}
    assert all(letter.reason.startswith("orphaned") for letter in letters)
    assert stack.sandbox.event_ids() == []
