"""The delivery engine on a real Redis with a scripted platform (httpx.MockTransport)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from dispatcher import DeadLetters, Destination, Dispatcher, Settings, keys
from dispatcher.client import Plan
from dispatcher.settings import LinkedInSettings
from tests.pipeline.events import linkedin
from workers.engine import Engine

Handler = Callable[[httpx.Request], httpx.Response]


def engine_for(settings: Settings, client: redis.Redis, handler: Handler) -> Engine:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return Engine(
        settings, client, http, consumer="test", sleep=lambda _: None, rng=random.Random(1)
    )


@pytest.fixture
def fast(settings: Settings) -> Settings:
    table = LinkedInSettings(
        base_url="http://li.test", max_wait_s=0, max_attempts=2, rate_per_min=6e6
    )
    return settings.model_copy(update={"linkedin": table})


def ok(request: httpx.Request) -> httpx.Response:
    n = len(json.loads(request.content)["elements"])
    return httpx.Response(200, json={"elements": [{"status": 201}] * n})


def test_an_event_past_its_acceptance_window_is_dead_lettered_not_sent(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given an event stored 91 days after it happened (an old producer, a long outage)
    body = linkedin(1, "old")
    old_ms = int(time.time() * 1000) - 91 * 86_400_000
    Dispatcher(fast).store(Plan(groups={"li-main": [("old-1", json.dumps(body).encode(), old_ms)]}))
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return ok(request)

    # When a worker drains
    report = engine_for(fast, redis_client, record).drain("li-main")
    # Then it is dead-lettered as expired and never sent
    assert sent == []
    assert report.dead == 1
    (letter,) = DeadLetters(Dispatcher(fast)).list("linkedin")
    assert letter.reason.startswith("expired")


def test_retries_end_at_max_attempts_with_the_last_error(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given a platform that is down for good and max_attempts = 2
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    engine = engine_for(fast, redis_client, lambda r: httpx.Response(503, json={}))
    # When two drains fail (the backoff cleared between them, as time would)
    first = engine.drain("li-main")
    redis_client.hdel(keys.state("li-main"), "next_at_ms")
    second = engine.drain("li-main")
    # Then the first backs off and the second gives up, dead-lettering with the reason
    assert first.status == "backing-off"
    assert first.retry == 1
    assert second.dead == 1
    (letter,) = DeadLetters(Dispatcher(fast)).list("linkedin")
    assert letter.reason == "gave up after 2 attempts: platform unavailable (503)"
    assert letter.attempts == 2
    assert redis_client.xlen(keys.stream("li-main")) == 0


def test_retry_after_as_an_http_date_sets_the_backoff(
    fast: Settings, redis_client: redis.Redis
) -> None:
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    later = time.time() + 120
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    engine = engine_for(
        fast, redis_client, lambda r: httpx.Response(429, headers={"Retry-After": date})
    )
    report = engine.drain("li-main")
    assert 115_000 <= report.not_before_ms - time.time() * 1000 <= 121_000
    assert abs(redis_client.zscore(keys.due("linkedin"), "li-main") / 1000 - later) < 3
    next_at = int(redis_client.hget(keys.state("li-main"), "next_at_ms"))
    assert abs(next_at / 1000 - later) < 3


def test_a_paused_destination_resumes_when_its_token_changes(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given a destination paused by a 401
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    refused = engine_for(
        fast, redis_client, lambda r: httpx.Response(401, json={"serviceErrorCode": 65601})
    )
    assert refused.drain("li-main").status == "paused"
    assert engine_for(fast, redis_client, ok).drain("li-main").status == "paused"
    # When the operator deploys a new token
    rotated = fast.model_copy(
        update={"destinations": {"li-main": Destination(platform="linkedin", token="new-token")}}
    )
    report = engine_for(rotated, redis_client, ok).drain("li-main")
    # Then the next drain delivers without anyone pressing resume
    assert report.delivered == 1
    assert not redis_client.hget(keys.state("li-main"), "paused")


def test_a_second_drain_of_the_same_destination_is_refused_by_the_lease(
    fast: Settings, redis_client: redis.Redis
) -> None:
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    redis_client.set(keys.lease("li-main"), "someone-else")
    assert engine_for(fast, redis_client, ok).drain("li-main").status == "busy"
    assert redis_client.xlen(keys.stream("li-main")) == 1


def test_a_partial_batch_waits_for_max_wait(settings: Settings, redis_client: redis.Redis) -> None:
    patient = settings.model_copy(
        update={"linkedin": LinkedInSettings(base_url="http://li.test", max_wait_s=30)}
    )
    Dispatcher(patient).enqueue(linkedin(1), "li-main")
    report = engine_for(patient, redis_client, ok).drain("li-main")
    assert report.status == "idle"
    assert report.batches == 0
    due_in_ms = redis_client.zscore(keys.due("linkedin"), "li-main") - time.time() * 1000
    assert 28_000 <= due_in_ms <= 30_000
