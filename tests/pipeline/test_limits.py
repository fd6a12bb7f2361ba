"""Rate limits shared by every worker process, and 429s that stop the whole scope."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_stack
from tests.pipeline.events import many

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]

RATE_PER_S = 10
CONFIG = {
    "linkedin": {"batch_size": 10, "max_wait_s": 0.1, "rate_per_min": RATE_PER_S * 60, "burst": 1},
    # Two destinations on one token: one rate-limit scope, drained by two worker processes.
    "destinations": {
        "li-a": {"platform": "linkedin", "token": "shared-token"},
        "li-b": {"platform": "linkedin", "token": "shared-token"},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    yield from start_stack(
        tmp_path_factory.mktemp("limits"), redis_url, json.loads(json.dumps(CONFIG))
    )


def call_times(stack: Stack, status: int | None = None) -> list[float]:
    return sorted(
        c["at_s"] for c in stack.sandbox.calls() if status is None or c["status"] == status
    )


def test_two_workers_together_never_exceed_the_token_bucket(stack: Stack) -> None:
    # Given 200 events for each of two destinations sharing one token (40 calls of 10)
    stack.dispatcher.enqueue_many(many(200, "a"), "li-a")
    stack.dispatcher.enqueue_many(many(200, "b"), "li-b")
    # When two worker processes deliver them
    wait_for(lambda: len(stack.sandbox.event_ids()) == 400, 60, "400 events")
    # Then both destinations were drained, and in every run of 11 consecutive calls at
    # least 1 s passed: 10 calls/s with a burst of 1, however many workers there are
    times = call_times(stack)
    assert len(times) == 40
    spans = [later - earlier for earlier, later in zip(times, times[RATE_PER_S:], strict=False)]
    assert min(spans) >= 0.9, f"{RATE_PER_S + 1} calls within {min(spans):.3f}s"
    assert {c["token_fingerprint"] for c in stack.sandbox.calls()} != set()


def test_a_429_with_retry_after_pauses_every_worker_for_that_token(stack: Stack) -> None:
    # Given LinkedIn throttled a call with Retry-After: 2 (one batch: no second one was
    # already on its way when the 429 came back)
    stack.sandbox.control("faults", {"status": 429, "retry_after": "2"})
    stack.dispatcher.enqueue_many(many(10, "a"), "li-a")
    block = "*blocked:linkedin:*"
    wait_for(lambda: any(stack.redis.scan_iter(match=block)), 30, "the 429's block")
    # When both destinations on that token have more work
    stack.dispatcher.enqueue_many(many(40, "a2"), "li-a")
    stack.dispatcher.enqueue_many(many(50, "b"), "li-b")
    wait_for(lambda: len(stack.sandbox.event_ids()) == 100, 60, "100 events")
    # Then no call on that token, from either destination's worker, came within 2 s of the 429
    (throttled_at,) = call_times(stack, 429)
    later = [t for t in call_times(stack) if t > throttled_at]
    assert later, "work resumed after the 429"
    assert min(later) - throttled_at >= 1.9
    assert stack.dead.count("linkedin") == 0
