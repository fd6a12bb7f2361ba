"""Prometheus metrics read from Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import generate_latest

from dispatcher import Destination, Dispatcher, Settings, keys
from dispatcher.settings import LinkedInSettings
from tests.pipeline.events import many
from workers.engine import Engine
from workers.metrics import registry


def test_metrics_show_backlog_counters_pause_and_dead_letters(
    settings: Settings, redis_client: redis.Redis, dispatcher: Dispatcher
) -> None:
    # Given 3 waiting events, counters a worker wrote, a pause and a dead letter
    dispatcher.enqueue_many(many(3), "li-main")
    redis_client.hset(keys.state("li-main"), mapping={"delivered": 7, "warnings": 2, "paused": 1})
    redis_client.xadd(keys.deadletters("linkedin"), {"d": "li-main"})
    # When Prometheus scrapes
    text = generate_latest(registry(settings, redis_client)).decode()
    # Then each shows, labelled by destination and platform
    labels = 'destination="li-main",platform="linkedin"'
    assert f"convdispatch_backlog{{{labels}}} 3.0" in text
    assert f"convdispatch_events_delivered_total{{{labels}}} 7.0" in text
    assert f"convdispatch_events_warnings_total{{{labels}}} 2.0" in text
    assert f"convdispatch_paused{{{labels}}} 1.0" in text
    assert 'convdispatch_deadletters{platform="linkedin"} 1.0' in text
    assert "token-main" not in text


def test_a_scrape_is_one_round_trip_whatever_the_destinations(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 50 destinations
    many_dests = {f"li-{i}": Destination(platform="linkedin", token=f"t{i}") for i in range(50)}
    wide = settings.model_copy(update={"destinations": many_dests})
    calls = {"pipelines": 0, "commands": 0}
    real_execute, real_command = redis.client.Pipeline.execute, redis.Redis.execute_command

    def counting_execute(self: redis.client.Pipeline, *a: Any, **k: Any) -> Any:
        calls["pipelines"] += 1
        return real_execute(self, *a, **k)

    def counting_command(self: redis.Redis, *a: Any, **k: Any) -> Any:
        calls["commands"] += 1
        return real_command(self, *a, **k)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(redis.client.Pipeline, "execute", counting_execute)
    monkeypatch.setattr(redis.Redis, "execute_command", counting_command)
    # When Prometheus scrapes
    text = generate_latest(registry(wide, redis_client)).decode()
    # Then every destination is there, from one pipelined round trip
    assert text.count("convdispatch_backlog{") == 50
    assert calls == {"pipelines": 1, "commands": 0}


def test_with_redis_down_a_scrape_answers_up_0() -> None:
    down = redis.Redis(port=9, socket_connect_timeout=0.5)
    text = generate_latest(registry(Settings(destinations={}), down)).decode()
    assert "convdispatch_up 0.0" in text


def test_ages_times_and_latency_histograms_after_a_delivery(
    settings: Settings, redis_client: redis.Redis, dispatcher: Dispatcher
) -> None:
    # Given events that waited a little, then were delivered by a drain
    fast = settings.model_copy(
        update={"linkedin": LinkedInSettings(base_url="http://li.test", max_wait_s=0)}
    )
    dispatcher.enqueue_many(many(4), "li-main")
    text = generate_latest(registry(fast, redis_client)).decode()
    labels = 'destination="li-main",platform="linkedin"'
    assert "convdispatch_up 1.0" in text
    age = float(text.split(f"convdispatch_oldest_waiting_age_seconds{{{labels}}} ")[1].split()[0])
    assert 0 <= age < 60
    assert (
        float(text.split(f"convdispatch_next_attempt_timestamp_seconds{{{labels}}} ")[1].split()[0])
        > 0
    )

    def ok(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["elements"])
        return httpx.Response(200, json={"elements": [{"status": 201}] * n})

    http = httpx.Client(transport=httpx.MockTransport(ok))
    assert Engine(fast, redis_client, http).drain("li-main").delivered == 4
    # When Prometheus scrapes again
    text = generate_latest(registry(fast, redis_client)).decode()
    # Then nothing waits, the success time is now, and both histograms counted
    assert f"convdispatch_oldest_waiting_age_seconds{{{labels}}} 0.0" in text
    success = float(
        text.split(f"convdispatch_last_success_timestamp_seconds{{{labels}}} ")[1].split()[0]
    )
    assert abs(success - time.time()) < 60
    assert 'convdispatch_delivery_latency_seconds_count{platform="linkedin"} 4.0' in text
    assert 'convdispatch_delivery_latency_seconds_bucket{le="+Inf",platform="linkedin"} 4.0' in text
    assert 'convdispatch_drain_seconds_count{platform="linkedin"} 1.0' in text


def test_json_logs_carry_the_delivery_fields() -> None:
    import logging

    from workers.logs import JsonFormatter

    record = logging.LogRecord(
        "workers.engine", logging.INFO, __file__, 1, "batch %s", ("b1",), None
    )
    record.destination, record.batch, record.outcome, record.status = (
        "li-main",
        "b1",
        "delivered",
        200,
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "batch b1"
    assert (line["destination"], line["batch"], line["outcome"], line["status"]) == (
        "li-main", "b1", "delivered", 200,
    )  # fmt: skip
    assert line["level"] == "INFO"


def test_the_grafana_dashboard_uses_only_metrics_that_exist(
    settings: Settings, redis_client: redis.Redis
) -> None:
    import re
    from pathlib import Path

    dashboard = json.loads(
        (Path(__file__).parents[2] / "config" / "grafana-dashboard.json").read_text()
    )
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"convdispatch_[a-z_]+", target["expr"])
    }
    exported = {family.name for family in registry(settings, redis_client).collect()}
    exported |= {f"{name}_total" for name in exported}  # counters are exposed with _total
    assert used, "the dashboard queries nothing"
    assert used - exported == set()


def test_flower_lists_every_platform_queue() -> None:
    # Flower's Broker page shows the queues workers report, else the app's declared ones
    from flower.views import BaseHandler

    from dispatcher.settings import PLATFORMS
    from workers.app import app

    class Handler:  # the two attributes get_active_queue_names reads
        capp = app
        application = type("App", (), {"workers": {}})()

    names = BaseHandler.get_active_queue_names(Handler())
    assert {f"convdispatch.{p}" for p in PLATFORMS} <= set(names)


def test_past_the_limit_only_the_busiest_and_paused_destinations_have_series(
    settings: Settings, redis_client: redis.Redis, dispatcher: Dispatcher
) -> None:
    # Given 20 destinations, a limit of 3, one with a backlog and one paused
    dests = {f"li-{i:02}": Destination(platform="linkedin", token=f"t{i}") for i in range(20)}
    wide = settings.model_copy(update={"destinations": dests, "metrics_max_destinations": 3})
    with Dispatcher(wide) as producer:
        producer.enqueue_many(many(4), "li-11")
    redis_client.hset(keys.state("li-07"), mapping={"paused": 1, "delivered": 5})
    # When Prometheus scrapes
    text = generate_latest(registry(wide, redis_client)).decode()
    # Then 3 destinations have series, the paused and the busiest among them, and the
    # platform totals cover all 20
    assert text.count("convdispatch_backlog{") == 3
    assert 'destination="li-07"' in text
    assert 'destination="li-11"' in text
    assert 'convdispatch_platform_destinations{platform="linkedin"} 20.0' in text
    assert 'convdispatch_platform_backlog{platform="linkedin"} 4.0' in text
    assert 'convdispatch_platform_paused{platform="linkedin"} 1.0' in text
    assert 'convdispatch_platform_events_delivered_total{platform="linkedin"} 5.0' in text
