"""The Celery broker on its own Redis, apart from the event store: delivery still works,
and neither server holds the other's keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from dispatcher import keys
from tests.conftest import start_redis, wait_for
from tests.pipeline.conftest import Stack, start_broker_stack
from tests.pipeline.events import linkedin

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_redis(tmp_path_factory.mktemp("broker"), aof=False)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, broker_url: str
) -> Iterator[Stack]:
    yield from start_broker_stack(tmp_path_factory.mktemp("broker-stack"), redis_url, broker_url)


def test_delivery_with_the_broker_on_its_own_redis(stack: Stack, broker_url: str) -> None:
    # Given workers whose Celery broker is a second Redis
    stack.dispatcher.enqueue_many([linkedin(i, "br") for i in range(500)], "li-a")
    # When they deliver
    wait_for(lambda: len(stack.sandbox.event_ids()) == 500, 60, "500 events")
    # Then the drain tasks went through the broker, and each server holds only its own keys
    broker = redis.Redis.from_url(broker_url)
    broker_keys = [k.decode() for k in broker.scan_iter(count=1000)]
    store_keys = [k.decode() for k in stack.redis.scan_iter(count=1000)]
    assert any(k.startswith(("_kombu", "unacked")) for k in broker_keys), broker_keys
    assert not any(k.startswith(f"{keys.PREFIX}:") for k in broker_keys)  # ours, not queues
    assert not any(k.startswith(("_kombu", "unacked", "celery")) for k in store_keys)
