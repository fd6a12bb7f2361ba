"""Celery's broker on a real RabbitMQ (quorum queues): delivery works end to end.

RabbitMQ is not installed on every machine (Debian: `apt install rabbitmq-server`); where
it is missing this test says so and skips: then the RabbitMQ broker was NOT exercised.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_broker_stack
from tests.pipeline.events import linkedin
from workers.processes import free_ports

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]
SERVER = shutil.which("rabbitmq-server") or (
    "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server")
    else None
)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def amqp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if SERVER is None:
        pytest.skip("RabbitMQ is not installed here: the RabbitMQ broker was NOT exercised")
    base: Path = tmp_path_factory.mktemp("rabbitmq")
    port, dist = free_ports(2)
    (base / "enabled_plugins").write_text("[].\n")
    env = os.environ | {
        "RABBITMQ_NODE_PORT": str(port), "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_NODENAME": f"convdispatch-test-{port}@localhost",
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
    }  # fmt: skip
    proc = subprocess.Popen([SERVER], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(port) or proc.poll() is not None, 90, "RabbitMQ to listen")
        if proc.poll() is not None:
            pytest.skip(f"RabbitMQ did not start (exit {proc.returncode}): NOT exercised")
        yield f"amqp://guest:guest@127.0.0.1:{port}//"
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, amqp_url: str
) -> Iterator[Stack]:
    yield from start_broker_stack(tmp_path_factory.mktemp("amqp"), redis_url, amqp_url)


def test_delivery_with_rabbitmq_as_the_broker(stack: Stack) -> None:
    stack.dispatcher.enqueue_many([linkedin(i, "mq") for i in range(300)], "li-a")
    wait_for(lambda: len(stack.sandbox.event_ids()) == 300, 90, "300 events through RabbitMQ")
    assert not any(k.startswith(b"_kombu") for k in stack.redis.scan_iter(count=1000))
