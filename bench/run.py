"""Benchmark: bulk enqueue rate, end-to-end delivery rate, and the naive baseline.

    python -m bench.run [--events 200000] [--naive-events 5000]

Starts its own embedded Redis, LinkedIn sandbox (rate limit lifted, bodies not kept)
and Celery workers; prints figures and ratios. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from dispatcher import Dispatcher, LinkedInConversionEvent, Settings
from workers import demo
from workers.processes import (
    Processes,
    beat_command,
    free_port,
    redis_command,
    sandbox_command,
    wait_for_http,
    wait_for_redis,
    worker_command,
)


def sandbox_total(url: str) -> int:
    return int(httpx.get(f"{url}/_sandbox/received?summary=1", timeout=30).json()["total_events"])


def wait_total(url: str, n: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while sandbox_total(url) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sandbox_total(url)} of {n} events arrived")
        time.sleep(0.05)
    return time.monotonic()


def bench_enqueue(settings: Settings, events: list[dict[str, object]]) -> float:
    """(a) events/s one producer process validates, hashes and stores with enqueue_many."""
    producer = Dispatcher(settings)
    started = time.perf_counter()
    for i in range(0, len(events), 5000):
        producer.enqueue_many(events[i : i + 5000], "bench")
    return len(events) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=5_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="convdispatch-bench-"))
    redis_port, sandbox_port = free_port(), free_port()
    redis_url, sandbox_url = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{sandbox_port}"
    values = {
        "redis_url": redis_url,
        "linkedin": {"base_url": sandbox_url, "rate_per_min": 10_000_000, "max_wait_s": 0.2},
        "destinations": {"bench": {"platform": "linkedin", "token": "bench-token"}},
    }
    env = {
        f"CONVDISP_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
        for k, v in values.items()
    }
    env |= {"CONVDISP_CONFIG": str(work / "none.toml"), "NAIVE_URL": sandbox_url}
    (work / "none.toml").write_text("")
    procs = Processes(work / "logs", env)
    os.environ.update(env)
    settings = Settings(**values)  # type: ignore[arg-type]
    client = redis.Redis.from_url(redis_url)
    try:
        procs.start("redis", redis_command(redis_port, work))
        wait_for_redis(redis_url)
        procs.start("sandbox", sandbox_command("linkedin", sandbox_port))
        wait_for_http(f"{sandbox_url}/_sandbox/calls")
        httpx.post(
            f"{sandbox_url}/_sandbox/config", json={"rate_limit": None, "record_bodies": False}
        )
        print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")

        events = demo.linkedin_events(args.events, seed=1)
        rate_a = bench_enqueue(settings, events)
        print(f"(a) bulk enqueue, one producer: {rate_a:,.0f} events/s ({args.events:,} events)")
        client.flushdb()

        procs.start("worker", worker_command(["linkedin"], concurrency=2, name="bench"))
        procs.start("beat", beat_command(work / "beat-schedule"))
        procs.wait_for_log("worker", " ready.")
        httpx.post(
            f"{sandbox_url}/_sandbox/reset", json={"rate_limit": None, "record_bodies": False}
        )
        events = demo.linkedin_events(args.events, seed=2)
        producer = Dispatcher(settings)
        started = time.monotonic()
        for i in range(0, len(events), 5000):
            producer.enqueue_many(events[i : i + 5000], "bench")
        rate_b = args.events / (wait_total(sandbox_url, args.events, 600) - started)
        print(f"(b) end to end, enqueue -> accepted by sandbox: {rate_b:,.0f} events/s")
        procs.kill("worker")
        procs.kill("beat")

        from bench.naive import send  # its broker is CONVDISP_REDIS_URL, set above

        naive_worker = [sys.executable, "-m", "celery", "-A", "bench.naive", "worker", "-c", "2"]
        procs.start("naive", [*naive_worker, "--loglevel", "INFO"])
        procs.wait_for_log("naive", " ready.")
        httpx.post(
            f"{sandbox_url}/_sandbox/reset", json={"rate_limit": None, "record_bodies": False}
        )
        naive = demo.linkedin_events(args.naive_events, seed=3)
        started = time.monotonic()
        for event in naive:  # the same validation and hashing, then one task per event
            send.delay(LinkedInConversionEvent.model_validate(event).to_payload()[1].decode())
        rate_c = args.naive_events / (wait_total(sandbox_url, args.naive_events, 300) - started)
        print(f"(c) naive task-per-event dispatcher, end to end: {rate_c:,.0f} events/s")
        print(
            f"ratios: (a)/30,000 = {rate_a / 30_000:.2f}; (b)/10,000 = {rate_b / 10_000:.2f}; "
            f"(b)/(c) = {rate_b / rate_c:.1f} (target >= 20)"
        )
    finally:
        procs.stop()
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
