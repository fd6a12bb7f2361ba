"""Job tracking on a real Redis with a scripted Yandex (httpx.MockTransport)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from dispatcher import DeadLetters, Destination, Dispatcher, Settings, keys
from dispatcher.registry import Registry
from dispatcher.settings import YandexSettings
from workers import jobs
from workers.engine import Engine

Handler = Callable[[httpx.Request], httpx.Response]
COUNTER = "/management/v1/counter/42/offline_conversions"


@pytest.fixture
def yandex(settings: Settings) -> Settings:
    table = YandexSettings(
        base_url="http://ym.test", batch_size=1, max_wait_s=0, rate_per_min=6e6, burst=1000,
        job_poll_interval_s=0.001, job_max_age_s=3600, ip_rate_per_s=1e6, max_in_flight=None,
    )  # fmt: skip
    dest = Destination(platform="yandex", token="ym-token", counter_id="42")
    return settings.model_copy(update={"yandex": table, "destinations": {"ym": dest}})


class Yandex:
    """Takes uploads (ids 1, 2, ...) and answers polls and listings with `status`."""

    def __init__(self) -> None:
        self.uploads: list[int] = []
        self.calls: list[str] = []
        self.status = "PREPARED"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            self.uploads.append(len(self.uploads) + 1)
            return httpx.Response(200, json={"uploading": self.upload(self.uploads[-1])})
        if request.url.path.endswith("/uploadings"):
            return httpx.Response(200, json={"uploadings": [self.upload(i) for i in self.uploads]})
        return httpx.Response(
            200, json={"uploading": self.upload(int(request.url.path.split("/")[-1]))}
        )

    def upload(self, i: int) -> dict[str, object]:
        return {"id": i, "status": self.status, "line_quantity": 1, "source_quantity": 1}


def rows(n: int) -> list[dict[str, object]]:
    at = int(time.time()) - 60
    return [{"ClientId": f"c.{i}", "Target": "paid", "DateTime": at} for i in range(n)]


def submit(settings: Settings, client: redis.Redis, platform: Yandex, n: int) -> Engine:
    Dispatcher(settings).enqueue_many(rows(n), "ym")
    http = httpx.Client(transport=httpx.MockTransport(platform))
    engine = Engine(
        settings, client, http, consumer="t", sleep=lambda _: None, rng=random.Random(1)
    )
    engine.drain("ym")
    assert len(platform.uploads) == n
    return engine


def test_many_open_uploads_of_a_counter_cost_one_listing_call(
    yandex: Settings, redis_client: redis.Redis
) -> None:
    # Given 10 uploads of one counter waiting to be followed
    platform = Yandex()
    engine = submit(yandex, redis_client, platform, 10)
    platform.calls.clear()
    platform.status = "PROCESSED"
    # When they are tracked
    counts = jobs.track(engine.registry, redis_client, engine.path, "yandex", engine.now_ms() + 10)
    # Then one listing told the state of all ten, and none was polled on its own
    assert platform.calls == [f"GET {COUNTER}/uploadings"]
    assert counts["finished"] == 10
    assert redis_client.zcard(keys.open_jobs("yandex")) == 0


def test_an_upload_that_never_finishes_is_dead_lettered_after_its_maximum_age(
    yandex: Settings, redis_client: redis.Redis
) -> None:
    # Given an upload Yandex never finishes processing
    platform = Yandex()
    engine = submit(yandex, redis_client, platform, 1)
    # When it is tracked after job_max_age_s
    later = engine.now_ms() + 3600 * 1000 + 1000
    counts = jobs.track(engine.registry, redis_client, engine.path, "yandex", later)
    # Then its rows are dead-lettered with that reason, and it is followed no more
    assert counts["expired"] == 1
    (letter,) = DeadLetters(Dispatcher(yandex)).list("yandex")
    assert "never finished within job_max_age_s" in letter.reason
    assert redis_client.zcard(keys.open_jobs("yandex")) == 0
    assert redis_client.pttl(keys.job("yandex", "1")) > 0  # the record itself expires


def test_a_throttled_poll_waits_as_told_without_an_error_or_a_state(
    yandex: Settings, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # Given one upload, and Yandex answering its poll 429 with Retry-After: 30
    platform = Yandex()
    engine = submit(yandex, redis_client, platform, 1)

    def throttled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "30"}, json={"errors": []})

    engine.http._transport = httpx.MockTransport(throttled)
    now = engine.now_ms() + 10
    # When it is tracked
    counts = jobs.track(engine.registry, redis_client, engine.path, "yandex", now)
    # Then it waits 30 s, keeps its last real state and nothing is logged as an error
    assert counts["waiting"] == 1
    assert (redis_client.zscore(keys.open_jobs("yandex"), "1") or 0) >= now + 30_000
    assert redis_client.hget(keys.job("yandex", "1"), "state") == b"PREPARED"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def fresh_engine(settings: Settings, client: redis.Redis, platform: Yandex) -> Engine:
    """A worker process that has drained nothing yet: it knows only the configuration."""
    http = httpx.Client(transport=httpx.MockTransport(platform))
    return Engine(settings.model_copy(deep=True), client, http, consumer="u", sleep=lambda _: None)


def test_a_job_of_a_destination_registered_at_runtime_is_followed_by_any_tracker(
    yandex: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YM_TOKEN", "ym-token")
    # Given a destination registered at runtime, and two of its uploads open
    configured = yandex.model_copy(update={"destinations": {}})
    Registry(configured.model_copy(deep=True), redis_client).add(
        "ym", {"platform": "yandex", "token_env": "YM_TOKEN", "counter_id": "42"}
    )
    platform = Yandex()
    submit(configured.model_copy(deep=True), redis_client, platform, 2)
    platform.status = "LINKAGE_FAILURE"
    # When a worker that has not synced the registry yet tracks them
    tracker = fresh_engine(configured, redis_client, platform)
    counts = jobs.track(
        tracker.registry, redis_client, tracker.path, "yandex", tracker.now_ms() + 10
    )
    # Then it finds the destination, follows both, and dead-letters their rows
    assert counts["failed"] == 2
    assert DeadLetters(Dispatcher(configured)).count("yandex") == 2


def test_a_job_whose_destination_is_unknown_here_is_kept_not_polled_nor_dead_lettered(
    yandex: Settings, redis_client: redis.Redis
) -> None:
    # Given an open upload, and a tracker that does not know its destination (removed from
    # the configuration, or its token unreadable in this process)
    platform = Yandex()
    submit(yandex, redis_client, platform, 1)
    removed = yandex.model_copy(update={"destinations": {}})
    tracker = fresh_engine(removed, redis_client, platform)
    platform.calls.clear()
    # When it is tracked
    now = tracker.now_ms() + 10
    counts = jobs.track(tracker.registry, redis_client, tracker.path, "yandex", now)
    # Then nothing polls it and nothing is dead-lettered (Yandex took those rows: a replay
    # would send them twice); it stays open, looked at again later
    assert platform.calls == []
    assert counts["waiting"] == 1
    assert DeadLetters(Dispatcher(removed)).count("yandex") == 0
    assert (redis_client.zscore(keys.open_jobs("yandex"), "1") or 0) > now


def test_a_draining_destination_is_removed_only_once_its_last_job_ended(
    yandex: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a destination registered at runtime, one upload open, and then set draining
    monkeypatch.setenv("YM_TOKEN", "ym-token")
    configured = yandex.model_copy(update={"destinations": {}})
    registry = Registry(configured.model_copy(deep=True), redis_client)
    registry.add("ym", {"platform": "yandex", "token_env": "YM_TOKEN", "counter_id": "42"})
    platform = Yandex()
    engine = submit(configured.model_copy(deep=True), redis_client, platform, 1)
    registry.remove("ym", "drain")
    # When a drain finds its backlog delivered while the upload is still open
    engine.registry.sync(force=True)
    assert engine.drain("ym").status == "idle"
    # Then it is not removed yet: the upload still needs its credentials to be followed
    assert redis_client.hexists(keys.registry_destinations(), "ym")
    # And once tracking sees the upload end, it is removed
    platform.status = "PROCESSED"
    counts = jobs.track(engine.registry, redis_client, engine.path, "yandex", engine.now_ms() + 10)
    assert counts["finished"] == 1
    assert not redis_client.hexists(keys.registry_destinations(), "ym")
