"""1,000 open vNative imports are followed within their poll interval at default settings."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from dispatcher import keys
from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_stack

pytestmark = [pytest.mark.pipeline]

JOBS = 1000
CONFIG = {
    # One import per event, delivered fast, so 1,000 jobs are open at once; the job
    # tracking itself keeps its defaults (poll interval 15 s, poll budget).
    "vnative": {
        "batch_size": 1,
        "max_wait_s": 0,
        "rate_per_min": 600_000,
        "burst": 100,
        "max_batches_in_flight": 4,
    },
    "drain_max_batches": 250,
    "destinations": {"vn-many": {"platform": "vnative", "token": "key-many"}},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    config = json.loads(json.dumps(CONFIG))
    yield from start_stack(
        tmp_path_factory.mktemp("jobs"), redis_url, config, workers=1, platform="vnative"
    )


@pytest.mark.timeout(300)
def test_a_thousand_open_imports_are_all_seen_finished_within_one_poll_interval(
    stack: Stack,
) -> None:
    interval_s = stack.settings.vnative.job_poll_interval_s
    # Given 1,000 imports accepted by vNative (each finishes on its side within 2 s); the
    # sandbox's own throttle is lifted, as delivery speed is not what is measured here
    stack.sandbox.control("config", {"rate_limit": None})
    at = int(time.time()) - 60
    events = [{"click_id": f"click-{i}", "conversion_time": at} for i in range(JOBS)]
    stack.dispatcher.enqueue_many(events, "vn-many")
    wait_for(lambda: stack.redis.zcard(keys.jobs_index("vnative")) == JOBS, 240, "1,000 jobs")
    last_submitted = time.monotonic()
    # When they are tracked, then every one is seen finished within one poll interval
    wait_for(
        lambda: stack.redis.zcard(keys.open_jobs("vnative")) == 0,
        interval_s + 10,
        "every job to be seen finished",
    )
    followed_after_s = time.monotonic() - last_submitted
    # And each job cost about one poll, not one per tracking round
    polls = [c for c in stack.sandbox.calls() if c["path"].startswith("/jobs/")]
    assert len(polls) <= JOBS + 20
    assert followed_after_s <= interval_s + 10
