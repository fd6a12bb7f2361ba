"""The event store on a real local Redis Cluster (three masters, a replica each).

The Celery broker is the session's single Redis (kombu does not speak Cluster). The same
sandbox and worker processes as the single-node tests; a master is failed over under load.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from cryptography.fernet import Fernet
from prometheus_client import generate_latest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from dispatcher import Dispatcher, StorageError, keys
from tests.conftest import Cluster, start_cluster, wait_for
from tests.pipeline.conftest import Stack, settings_env, start_stack
from tests.pipeline.events import linkedin, many
from workers.metrics import registry

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]

SECRET_KEY = Fernet.generate_key().decode()
# Six destinations: with 16 shards they land on every master (checked below).
NAMES = [f"li-{c}" for c in "abcdef"]
CONFIG = {
    "redis_cluster": True,
    "keyspace_shards": 16,
    "linkedin": {
        "max_wait_s": 0.2,
        "rate_per_min": 60_000,
        "backoff_base_s": 0.2,
        "timeout_s": 3.0,
        "max_attempts": 4,
        "batch_size": 100,  # many batches: the failover falls between two of them
    },
    "destinations": {n: {"platform": "linkedin", "token": f"token-{n}"} for n in NAMES},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, cluster: Cluster, redis_url: str
) -> Iterator[Stack]:
    config = {**json.loads(json.dumps(CONFIG)), "broker_url": redis_url}
    with redis.Redis.from_url(redis_url) as broker:
        broker.flushdb()  # what earlier modules' stacks left: this one's broker starts empty
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CONVDISP_SECRET_KEYS", SECRET_KEY)  # the workers unseal registry tokens
        yield from start_stack(tmp_path_factory.mktemp("on-cluster"), cluster.url, config)


def _master_of(stack: Stack, key: str) -> tuple[str, int]:
    client = stack.redis
    assert isinstance(client, RedisCluster)
    node = client.get_node_from_key(key)
    return node.host, int(node.port)


def test_the_destinations_spread_over_every_master_and_no_key_is_on_the_single_node(
    stack: Stack, redis_url: str
) -> None:
    # Given events for six destinations, enqueued into the cluster
    for name in NAMES:
        stack.dispatcher.enqueue(linkedin(0, name), name)
    # Then their streams live on all three masters
    masters = {_master_of(stack, keys.stream(n)) for n in NAMES}
    assert len(masters) == 3
    # And the broker's Redis holds no key of the event store
    broker = redis.Redis.from_url(redis_url)
    assert not list(broker.scan_iter(f"{keys.PREFIX}:*"))
    wait_for(lambda: len(stack.sandbox.event_ids()) == len(NAMES), 30, "the six events")


def test_every_script_of_a_destination_touches_one_slot() -> None:
    # (the layout stays configured by the module's stack)
    assert keys.sharded()
    name = "li-a"
    shard = keys.shard(name)
    touched = [
        keys.stream(name), keys.state(name), keys.lease(name), keys.event_ids(name),
        keys.attempts(name), keys.sending(name), keys.deliveries(name),
        keys.due("linkedin", shard), keys.deadletters("linkedin", shard),
        keys.job("linkedin", "j1", shard), keys.job_events("linkedin", "j1", shard),
        keys.open_jobs("linkedin", shard), keys.jobs_index("linkedin", shard),
        keys.delivery_latency("linkedin", shard), keys.drain_latency("linkedin", shard),
    ]  # fmt: skip
    assert len({key_slot(k.encode()) for k in touched}) == 1
    # and the due index is one key per shard, spread over many slots
    assert len({key_slot(keys.due("linkedin", s).encode()) for s in keys.shards()}) == 16


def test_thousands_of_events_over_six_destinations_arrive_exactly_once(stack: Stack) -> None:
    # Given 2,000 events for each of six destinations on three masters
    for name in NAMES:
        stack.dispatcher.enqueue_many(many(2000, name), name)
    # When the workers drain them
    wait_for(lambda: len(stack.sandbox.event_ids()) >= 12_000, 90, "12,000 events")
    wait_for(lambda: all(stack.backlog(n) == 0 for n in NAMES), 30, "the streams to empty")
    # Then every event arrived exactly once and nothing was dead-lettered
    ids = Counter(stack.sandbox.event_ids())
    assert len(ids) == 12_000
    assert set(ids.values()) == {1}
    assert stack.dead.count("linkedin") == 0
    assert sum(stack.counter(n, "delivered") for n in NAMES) == 12_000


def test_503s_are_retried_with_backoff(stack: Stack) -> None:
    stack.sandbox.control("faults", {"status": 503, "count": 3})
    stack.dispatcher.enqueue_many(many(5, "outage"), "li-c")
    wait_for(lambda: len(stack.sandbox.event_ids()) == 5, 30, "delivery after the outage")
    assert [c["status"] for c in stack.sandbox.calls()] == [503, 503, 503, 200]
    assert stack.counter("li-c", "retried") == 15
    assert stack.dead.count("linkedin") == 0


def test_refused_events_are_dead_lettered_per_shard_and_replayed(stack: Stack) -> None:
    # Given LinkedIn refuses one call each for two destinations of different shards
    message = "Validation failed because [{field=x, batchIndex=0, type=T, message=refused}]"
    other = next(n for n in NAMES if keys.shard(n) != keys.shard("li-a"))
    pair = [other, "li-a"]
    stack.sandbox.control(
        "faults", {"status": 400, "count": 2, "body": {"message": message, "status": 400}}
    )
    for name in pair:
        stack.dispatcher.enqueue(linkedin(1, f"dead-{name}"), name)
    wait_for(lambda: stack.dead.count("linkedin") == 2, 30, "two dead letters")
    # Then both are listed, each with its shard in its id, and found by id
    letters = stack.dead.list("linkedin")
    assert sorted(x.destination for x in letters) == sorted(pair)
    for letter in letters:
        assert letter.id.startswith(f"{keys.shard(letter.destination)}:")
        assert stack.dead.show("linkedin", letter.id).event_id == letter.event_id
    assert [x.destination for x in stack.dead.list("linkedin", destination="li-a")] == ["li-a"]
    (trace,) = stack.control.trace("dead-li-a-1", "li-a")
    assert trace.state == "dead"
    assert trace.facts["dead_letter"] in {x.id for x in letters}
    # When an operator replays them, both are delivered and the dead letters are gone
    assert stack.dead.replay("linkedin") == 2
    wait_for(lambda: len(stack.sandbox.event_ids()) == 2, 30, "the replayed events")
    assert sorted(stack.sandbox.event_ids()) == sorted(f"dead-{n}-1" for n in pair)
    assert stack.dead.count("linkedin") == 0


def test_a_master_failed_over_under_load_loses_nothing(stack: Stack, cluster: Cluster) -> None:
    # Given a slow platform and a backlog on a destination whose shard one master holds
    stack.sandbox.control("config", {"latency_s": 0.3})
    busy = "li-b"
    stack.dispatcher.enqueue_many(many(3000, "fo"), busy)
    wait_for(lambda: stack.sandbox.event_ids(), 30, "the first batch")
    _, port = _master_of(stack, keys.stream(busy))
    replica = _replica_of(cluster, port)
    # When its replica takes over (CLUSTER FAILOVER: the replica catches up first)
    cast(Any, cluster.node(replica)).execute_command("CLUSTER FAILOVER")
    wait_for(lambda: _master_of_fresh(cluster, keys.stream(busy)) == replica, 30, "failover")
    assert len(stack.sandbox.event_ids()) < 3000  # the failover fell in the middle
    stack.sandbox.control("config", {"latency_s": 0.0})
    # And more events arrive after it
    stack.dispatcher.enqueue_many(many(1000, "after"), busy)
    # Then every event is delivered, none lost, none twice
    wait_for(lambda: len(set(stack.sandbox.event_ids())) >= 4000, 90, "all 4,000 events")
    wait_for(lambda: stack.backlog(busy) == 0, 30, "the stream to empty")
    ids = Counter(stack.sandbox.event_ids())
    assert set(ids) == {f"fo-{i}" for i in range(3000)} | {f"after-{i}" for i in range(1000)}
    assert max(ids.values()) == 1
    assert stack.dead.count("linkedin") == 0


def _replica_of(cluster: Cluster, master_port: int) -> int:
    """The port of the replica following the master on `master_port`."""
    for port in cluster.ports:
        info = cluster.node(port).info("replication")
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == master_port:
            return port
    raise AssertionError(f"no replica of {master_port}")


def _master_of_fresh(cluster: Cluster, key: str) -> int:
    """The port of the master serving `key`'s slot, as a node reports it now."""
    slot = key_slot(key.encode())
    for start, end, master, *_ in cast(Any, cluster.node(cluster.ports[0])).execute_command(
        "CLUSTER SLOTS"
    ):
        if int(start) <= slot <= int(end):
            return int(master[1])
    raise AssertionError(f"slot {slot} unassigned")


def test_the_operator_commands_read_every_shard(stack: Stack, tmp_path: Path) -> None:
    # Given a backlog held back (503) on two destinations of different shards
    stack.sandbox.control("faults", {"status": 503, "count": 1000, "retry_after": "60"})
    other = next(n for n in NAMES if keys.shard(n) != keys.shard("li-a"))
    for name in ("li-a", other):
        stack.dispatcher.enqueue_many(many(7, f"held-{name}"), name)
    wait_for(lambda: stack.control.status("li-a").backlog == 7, 30, "the backlog")
    env = settings_env(
        {"redis_url": stack.settings.redis_url, "redis_cluster": True, "keyspace_shards": 16,
         "broker_url": stack.settings.broker, "destinations": CONFIG["destinations"]},
        tmp_path,
    )  # fmt: skip
    run = partial(_cli, env)
    # Then `check` reads every master, `status` totals both shards, metrics add them up
    checked = run("check")
    assert checked.stdout.count("AOF on") == 3, checked.stdout
    assert "6 destination(s): backlog 14, 0 paused, 2 with errors" in run("status").stdout
    text = generate_latest(registry(stack.settings, stack.redis)).decode()
    backlog = [line for line in text.splitlines() if line.startswith("convdispatch_backlog{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in backlog) == 14


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVDISP_")}
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], env={**clean, **env, "COLUMNS": "200"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


def test_the_asyncio_producer_writes_to_the_cluster(stack: Stack) -> None:
    async def produce() -> None:
        for name in NAMES:
            await stack.dispatcher.aenqueue_many(many(3, f"async-{name}"), name)
        await stack.dispatcher.aclose()

    asyncio.run(produce())
    wait_for(lambda: len(stack.sandbox.event_ids()) == 18, 30, "the 18 events")
    assert sorted(stack.sandbox.event_ids()) == sorted(
        f"async-{n}-{i}" for n in NAMES for i in range(3)
    )


def test_a_destination_registered_at_runtime_is_served_from_the_cluster(stack: Stack) -> None:
    # Given a destination added through the registry while the workers run
    registry = stack.dispatcher.registry
    registry.add("li-late", {"platform": "linkedin", "token": "late-secret-token"})
    try:
        # When events are enqueued for it, the workers deliver them without a restart
        stack.dispatcher.enqueue_many(many(5, "late"), "li-late")
        wait_for(lambda: len(stack.sandbox.event_ids()) == 5, 20, "the 5 events")
        # And its token is nowhere in the cluster in clear
        for key in stack.redis.scan_iter(f"{keys.PREFIX}:*"):
            if stack.redis.type(key) == b"hash":
                assert b"late-secret-token" not in b"".join(
                    b"".join(kv) for kv in stack.redis.hgetall(key).items()
                )
    finally:
        registry.remove("li-late", "keep")


def test_a_master_killed_without_warning_loses_no_replicated_event(
    stack: Stack, cluster: Cluster
) -> None:
    # (last in the module: it leaves the cluster one node short)
    # Given a backlog on a destination whose master is, if it still is one, the node named
    # in redis_url (the clients' first contact), its writes replicated (WAIT), delivery
    # under way
    stack.sandbox.control("config", {"latency_s": 0.2})
    masters = {_master_of(stack, keys.stream(n))[1]: n for n in NAMES}
    port = cluster.ports[0] if cluster.ports[0] in masters else min(masters)
    busy = masters[port]
    stack.dispatcher.enqueue_many(many(2000, "kill"), busy)
    assert cast(Any, cluster.node(port)).execute_command("WAIT", 1, 5000) == 1
    wait_for(lambda: stack.sandbox.event_ids(), 30, "the first batch")
    # When that master is SIGKILLed and its replica promotes itself after the node timeout
    cluster.procs[port].kill()
    replica = _replica_of_dead(cluster, port)
    wait_for(lambda: _master_of_fresh_on(cluster, replica, keys.stream(busy)) == replica, 30,
             "the replica to take over")  # fmt: skip
    # And the application enqueues more, retrying on StorageError as documented
    wait_for(lambda: _enqueued(stack, many(500, "after-kill"), busy), 30, "an enqueue to land")
    # And a new asyncio producer that lists several nodes in redis_url, the dead one
    # first, gets through
    seeds = ",".join(f"127.0.0.1:{p}" for p in [port, *[q for q in cluster.ports if q != port]])
    listed = stack.settings.model_copy(update={"redis_url": f"redis://{seeds}/0"})

    late = Dispatcher(listed)

    async def produce() -> None:
        try:
            await late.aenqueue_many(many(100, "async-after-kill"), busy)
        finally:
            await late.aclose()

    asyncio.run(produce())
    late.close()
    # Then every event arrives (LinkedIn deduplicates by eventId; resends are counted)
    stack.sandbox.control("config", {"latency_s": 0.0})
    wanted = {f"kill-{i}" for i in range(2000)} | {f"after-kill-{i}" for i in range(500)}
    wanted |= {f"async-after-kill-{i}" for i in range(100)}
    wait_for(lambda: wanted <= set(stack.sandbox.event_ids()), 60, "all 2,600 events")
    assert stack.dead.count("linkedin") == 0
    resent = len(stack.sandbox.event_ids()) - len(wanted)
    print(f"sent again after the unplanned failover: {resent} events")


def _enqueued(stack: Stack, events: list[dict[str, Any]], name: str) -> bool:
    try:
        stack.dispatcher.enqueue_many(events, name)
    except StorageError:
        return False
    return True


def _replica_of_dead(cluster: Cluster, master_port: int) -> int:
    """The port of the replica that followed the master on `master_port` (now dead)."""
    for port in cluster.ports:
        if port != master_port:
            info = cluster.node(port).info("replication")
            if int(info.get("master_port", 0)) == master_port:
                return port
    raise AssertionError(f"no replica of {master_port}")


def _master_of_fresh_on(cluster: Cluster, asked: int, key: str) -> int:
    """The port of the master serving `key`'s slot, as the node on `asked` sees it."""
    slot = key_slot(key.encode())
    slots = cast(Any, cluster.node(asked)).execute_command("CLUSTER SLOTS")
    for start, end, master, *_ in slots:
        if int(start) <= slot <= int(end):
            return int(master[1])
    return -1
