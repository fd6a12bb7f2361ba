"""Redis restarts under a running worker, with nothing supervising the worker."""

from __future__ import annotations

import signal
import subprocess
from functools import partial
from pathlib import Path

import pytest
import redis

from dispatcher import Dispatcher, Settings, keys
from tests.conftest import wait_for
from tests.pipeline.conftest import Sandbox, settings_env
from tests.pipeline.events import many
from workers.processes import (
    Processes,
    free_port,
    redis_command,
    sandbox_command,
    wait_for_http,
    wait_for_redis,
    worker_command,
)

pytestmark = [pytest.mark.pipeline]


@pytest.fixture
def own_redis(tmp_path: Path) -> tuple[int, Path]:
    """A Redis of this test's own (AOF in `tmp_path`), so it can be killed and restarted."""
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()
    return port, data


def start_redis(port: int, data: Path) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(redis_command(port, data), stdout=subprocess.DEVNULL)
    wait_for_redis(f"redis://127.0.0.1:{port}/0")
    return child


def test_a_worker_keeps_delivering_after_redis_restarts_twice(
    tmp_path: Path, own_redis: tuple[int, Path]
) -> None:
    port, data = own_redis
    server = start_redis(port, data)
    url = f"redis://127.0.0.1:{port}/0"
    sandbox_port = free_port()
    values = {
        "redis_url": url,
        "linkedin": {"base_url": f"http://127.0.0.1:{sandbox_port}", "max_wait_s": 0.2},
        "destinations": {"li-r": {"platform": "linkedin", "token": "token-r"}},
    }
    procs = Processes(tmp_path / "logs", settings_env(values, tmp_path))
    producer = Dispatcher(Settings(**values))
    sandbox = Sandbox(f"http://127.0.0.1:{sandbox_port}")
    try:
        procs.start("sandbox", sandbox_command("linkedin", sandbox_port))
        wait_for_http(f"{sandbox.url}/_sandbox/calls")
        procs.start("worker", worker_command(["linkedin"], concurrency=1, name="worker"))
        procs.wait_for_log("worker", " ready.")
        producer.enqueue_many(many(10, "before"), "li-r")
        wait_for(lambda: sandbox.get("count")["events"] == 10, 30, "delivery before")
        # When Redis is SIGKILLed and restarted twice (same port, same AOF), no supervisor
        sandbox.control("config", {"latency_s": 1.5})
        for round_ in range(2):
            # (with a batch in flight, so the broker holds an unacknowledged task)
            producer.enqueue_many(many(10, f"inflight{round_}"), "li-r")
            wait_for(lambda: _in_flight(url), 30, "a batch in flight")
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            server = start_redis(port, data)
            producer.enqueue_many(many(10, f"after{round_}"), "li-r")
            expected = 10 + 20 * (round_ + 1)
            # Then the same worker delivers what is enqueued after each restart
            wait_for(partial(_accepted_at_least, sandbox, expected), 60, "delivery after")
            assert procs.children["worker"].poll() is None, procs.log("worker")[-2000:]
        ids = set(sandbox.event_ids())
        assert {f"after1-{i}" for i in range(10)} <= ids
    finally:
        procs.stop()
        producer.close()
        server.terminate()
        server.wait(10)
        redis.Redis(port=port).close()


def _accepted_at_least(sandbox: Sandbox, n: int) -> bool:
    return int(sandbox.get("count")["events"]) >= n


def _in_flight(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(client.xpending(keys.stream("li-r"), keys.GROUP)["pending"])
    finally:
        client.close()
