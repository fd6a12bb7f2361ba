"""The embedded run's supervision: a component that exits is started again."""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from tests.conftest import wait_for
from workers.processes import Processes, free_port, redis_command, wait_for_redis


def test_a_killed_component_is_restarted_with_its_data(tmp_path: Path) -> None:
    # Given an embedded Redis holding a key, under supervision
    port = free_port()
    (tmp_path / "data").mkdir()
    procs = Processes(tmp_path / "logs")
    procs.start("redis", redis_command(port, tmp_path / "data"))
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url)
    client = redis.Redis.from_url(url)
    client.config_set("appendfsync", "always")
    client.set("kept", "yes")
    try:
        first = procs.children["redis"].pid
        # When it is SIGKILLed
        procs.children["redis"].send_signal(signal.SIGKILL)
        procs.children["redis"].wait(10)
        # Then supervision starts it again, with its data (AOF)
        assert procs.supervise() == ["redis"]
        assert procs.children["redis"].pid != first
        wait_for_redis(url)
        assert wait_for(lambda: client.get("kept"), 10) == b"yes"
        assert procs.restarts == {"redis": 1}
        assert "restarting" in procs.log("redis")
        assert procs.supervise() == []  # a running child is left alone
    finally:
        client.close()
        procs.stop()
