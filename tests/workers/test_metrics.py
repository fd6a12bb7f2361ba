"""Prometheus metrics read from Redis."""

from __future__ import annotations

import redis
from prometheus_client import generate_latest

from dispatcher import Dispatcher, Settings, keys
from tests.pipeline.events import many
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
