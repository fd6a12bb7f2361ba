"""A real stack per test module: sandbox and Celery worker processes on the session's Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from dispatcher import Control, DeadLetters, Dispatcher, Settings, keys
from dispatcher.storage import open_store
from tests.conftest import wait_for
from workers.processes import (
    Processes,
    free_port,
    sandbox_command,
    wait_for_http,
    worker_command,
)


@dataclass
class Sandbox:
    """Drives a sandbox process through its control API."""

    url: str

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(f"{self.url}/_sandbox/{path}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}/_sandbox/{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def event_ids(self, field: str = "eventId") -> list[str]:
        """Ids of the accepted events, by the platform's id field."""
        return [e[field] for e in self.get(f"events?fields={field}")]

    def calls(self) -> list[dict[str, Any]]:
        return list(self.get("calls"))


@dataclass
class Stack:
    """What a pipeline test drives: the producer, the sandbox, the worker processes."""

    settings: Settings
    dispatcher: Dispatcher
    sandbox: Sandbox
    procs: Processes
    redis: redis.Redis

    @property
    def control(self) -> Control:
        return Control(self.dispatcher)

    @property
    def dead(self) -> DeadLetters:
        return DeadLetters(self.dispatcher)

    def backlog(self, destination: str) -> int:
        return int(self.redis.xlen(keys.stream(destination)))

    def holder_pid(self, destination: str) -> int | None:
        """The pid of the worker process that has taken entries of `destination`."""
        consumers = self.redis.xinfo_consumers(keys.stream(destination), keys.GROUP)
        busy = [_text(c["name"]) for c in consumers if c["pending"]]
        return int(busy[0].rsplit("-", 1)[1]) if busy else None

    def counter(self, destination: str, name: str) -> int:
        return int(self.redis.hget(keys.state(destination), name) or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def start_stack(
    tmp_path: Path,
    redis_url: str,
    config: dict[str, Any],
    workers: int = 2,
    platform: str = "linkedin",
) -> Iterator[Stack]:
    """Start `platform`'s sandbox and `workers` Celery workers for its queue (no beat).

    `config` holds Settings values; `config[platform]` is merged over the sandbox's URL
    (and "{sandbox}" in its strings becomes that URL).
    """
    port = free_port()
    sandbox_url = f"http://127.0.0.1:{port}"
    table = {"base_url": sandbox_url, **config.pop(platform, {})}
    table = {
        k: v.format(sandbox=sandbox_url) if isinstance(v, str) else v for k, v in table.items()
    }
    values = {"redis_url": redis_url, platform: table, **config}
    procs = Processes(tmp_path / "logs", settings_env(values, tmp_path))
    settings = Settings(**values)
    client = open_store(settings)  # a cluster client with `redis_cluster`
    client.flushdb()  # (on every primary of a cluster)
    stack = Stack(settings, Dispatcher(settings), Sandbox(sandbox_url), procs, client)
    try:
        procs.start("sandbox", sandbox_command(platform, port))
        wait_for_http(f"{sandbox_url}/_sandbox/calls")
        for i in range(workers):
            procs.start(f"worker{i}", worker_command([platform], concurrency=1, name=f"worker{i}"))
        for i in range(workers):
            procs.wait_for_log(f"worker{i}", " ready.")
        yield stack
    finally:
        procs.stop()
        stack.dispatcher.close()
        client.close()
        keys.configure(None)  # the next module's stack is single-node again


def start_broker_stack(tmp_path: Path, redis_url: str, broker_url: str) -> Iterator[Stack]:
    """A LinkedIn stack with one destination, "li-a", whose Celery broker is `broker_url`."""
    config = {
        "broker_url": broker_url,
        "linkedin": {"max_wait_s": 0.2, "rate_per_min": 60_000, "timeout_s": 3.0},
        "destinations": {"li-a": {"platform": "linkedin", "token": "token-a"}},
    }
    yield from start_stack(tmp_path, redis_url, config)


def settings_env(values: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Settings as the CONVDISP_* environment of worker processes, and no config file."""
    env = {
        f"CONVDISP_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
        for k, v in values.items()
    }
    env["CONVDISP_CONFIG"] = str(tmp_path / "none.toml")
    (tmp_path / "none.toml").write_text("")
    return env


@pytest.fixture
def fresh(request: pytest.FixtureRequest) -> None:
    """Reset the module's stack between tests: sandbox records and faults, Redis keys.

    Waits first until no drain holds a lease, so a call of the previous test still in
    flight cannot land in this test's records.
    """
    stack: Stack = request.getfixturevalue("stack")
    wait_for(
        lambda: not any(stack.redis.scan_iter(f"{keys.PREFIX}:*:lease")), 30, "drains to finish"
    )
    stack.sandbox.control("reset")
    for key in stack.redis.scan_iter(f"{keys.PREFIX}:*"):
        stack.redis.delete(key)
