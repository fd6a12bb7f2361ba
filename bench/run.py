"""Benchmark: bulk enqueue, end-to-end delivery, the naive baseline, and a four-platform mix.

    python -m bench.run [--events 200000] [--naive-events 5000] [--mixed 20000]

Starts its own embedded Redis, sandboxes (rate limits lifted, bodies not kept) and
Celery workers; prints figures and ratios. Not part of the test run.

(a) events/s one producer process validates, hashes and stores with `enqueue_many`;
(b) LinkedIn end to end, from the first enqueue until the sandbox accepted the last event;
(c) the same for a naive dispatcher: one Celery task and one HTTP call per event;
(d) four platforms at once: `Conversion`s fanned out to LinkedIn, Pinterest, Yandex and
    vNative, one worker per platform queue, until every sandbox accepted its share.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from dispatcher import Dispatcher, LinkedInConversionEvent, Settings
from dispatcher.settings import PLATFORMS
from workers import demo
from workers.processes import (
    Processes,
    free_port,
    redis_command,
    sandbox_command,
    wait_for_http,
    wait_for_redis,
    worker_command,
)

UNLIMITED = {"rate_per_min": 10_000_000, "burst": 100, "max_wait_s": 0.2}
SANDBOX_CONFIG = {"rate_limit": None, "record_bodies": False}


class Bench:
    """The processes of one benchmark run and the URLs they listen on."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.urls: dict[str, str] = {p: f"http://127.0.0.1:{free_port()}" for p in PLATFORMS}
        self.values: dict[str, Any] = {
            "redis_url": self.redis_url,
            "linkedin": {"base_url": self.urls["linkedin"], **UNLIMITED},
            "pinterest": {"base_url": self.urls["pinterest"], **UNLIMITED},
            "yandex": {"base_url": self.urls["yandex"], **UNLIMITED, "ip_rate_per_s": 100_000},
            "vnative": {"base_url": self.urls["vnative"], **UNLIMITED, "job_poll_interval_s": 1},
            "destinations": {
                "bench-li": {"platform": "linkedin", "token": "bench-li"},
                "bench-pin": {"platform": "pinterest", "token": "bench-pin", "ad_account_id": "1"},
                "bench-ym": {"platform": "yandex", "token": "bench-ym", "counter_id": "1"},
                "bench-vn": {"platform": "vnative", "token": "bench-vn"},
            },
            "routes": [
                {"event": "purchase", "destination": "bench-li",
                 "conversion": "urn:lla:llaPartnerConversion:1"},
                {"event": "purchase", "destination": "bench-pin"},
                {"event": "purchase", "destination": "bench-ym", "target": "paid"},
                {"event": "purchase", "destination": "bench-vn"},
            ],
        }  # fmt: skip
        env = {
            f"CONVDISP_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
            for k, v in self.values.items()
        }
        env |= {"CONVDISP_CONFIG": str(work / "none.toml"), "NAIVE_URL": self.urls["linkedin"]}
        (work / "none.toml").write_text("")
        os.environ.update(env)
        self.procs = Processes(work / "logs", env)
        self.settings = Settings(**self.values)

    def start(self) -> None:
        self.procs.start("redis", redis_command(urlsplit(self.redis_url).port or 6379, self.work))
        wait_for_redis(self.redis_url)
        for platform, url in self.urls.items():
            port = urlsplit(url).port or 80
            self.procs.start(f"sandbox-{platform}", sandbox_command(platform, port))
            wait_for_http(f"{url}/_sandbox/calls")
        self.reset()

    def reset(self) -> None:
        redis.Redis.from_url(self.redis_url).flushdb()
        for url in self.urls.values():
            httpx.post(f"{url}/_sandbox/reset", json=SANDBOX_CONFIG, timeout=30)

    def accepted(self, platform: str) -> int:
        summary = httpx.get(f"{self.urls[platform]}/_sandbox/received?summary=1", timeout=30)
        return int(summary.json()["total_events"])

    def wait_accepted(self, wanted: dict[str, int], timeout_s: float = 600) -> float:
        deadline = time.monotonic() + timeout_s
        while any(self.accepted(p) < n for p, n in wanted.items()):
            if time.monotonic() > deadline:
                got = {p: self.accepted(p) for p in wanted}
                raise TimeoutError(f"accepted {got} of {wanted}")
            time.sleep(0.05)
        return time.monotonic()

    def workers(self, platforms: list[str], concurrency: int) -> None:
        for platform in platforms:
            name = f"worker-{platform}"
            self.procs.start(name, worker_command([platform], concurrency, name=platform))
        for platform in platforms:
            self.procs.wait_for_log(f"worker-{platform}", " ready.")

    def stop_workers(self) -> None:
        for name in [n for n in self.procs.children if n.startswith(("worker", "naive"))]:
            self.procs.kill(name)


def enqueue_rate(bench: Bench, n: int) -> float:
    """(a)"""
    events = demo.linkedin_events(n, seed=1)
    producer = Dispatcher(bench.settings)
    started = time.perf_counter()
    for i in range(0, n, 5000):
        producer.enqueue_many(events[i : i + 5000], "bench-li")
    return n / (time.perf_counter() - started)


def end_to_end(bench: Bench, n: int) -> float:
    """(b)"""
    bench.workers(["linkedin"], concurrency=2)
    events = demo.linkedin_events(n, seed=2)
    producer = Dispatcher(bench.settings)
    started = time.monotonic()
    for i in range(0, n, 5000):
        producer.enqueue_many(events[i : i + 5000], "bench-li")
    rate = n / (bench.wait_accepted({"linkedin": n}) - started)
    bench.stop_workers()
    return rate


def naive(bench: Bench, n: int) -> float:
    """(c)"""
    from bench.naive import send  # its broker is CONVDISP_REDIS_URL, set by Bench

    command = [sys.executable, "-m", "celery", "-A", "bench.naive", "worker", "-c", "2"]
    bench.procs.start("naive", [*command, "--loglevel", "INFO"])
    bench.procs.wait_for_log("naive", " ready.")
    events = demo.linkedin_events(n, seed=3)
    started = time.monotonic()
    for event in events:  # the same validation and hashing, then one task per event
        send.delay(LinkedInConversionEvent.model_validate(event).to_payload()[1].decode())
    rate = n / (bench.wait_accepted({"linkedin": n}, 300) - started)
    bench.stop_workers()
    return rate


def mixed(bench: Bench, n: int) -> float:
    """(d)"""
    bench.workers(list(PLATFORMS), concurrency=1)
    conversions = demo.purchases(n, seed=4)
    producer = Dispatcher(bench.settings)
    started = time.monotonic()
    for i in range(0, n, 1000):
        producer.enqueue_conversions(conversions[i : i + 1000])
    rate = 4 * n / (bench.wait_accepted(dict.fromkeys(PLATFORMS, n)) - started)
    bench.stop_workers()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=5_000)
    parser.add_argument("--mixed", type=int, default=20_000, help="conversions (x4 events)")
    args = parser.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="convdispatch-bench-")))
    try:
        bench.start()
        print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
        rate_a = enqueue_rate(bench, args.events)
        print(f"(a) bulk enqueue, one producer: {rate_a:,.0f} events/s ({args.events:,} events)")
        bench.reset()
        rate_b = end_to_end(bench, args.events)
        print(f"(b) end to end, LinkedIn: {rate_b:,.0f} events/s ({args.events:,} events)")
        bench.reset()
        rate_c = naive(bench, args.naive_events)
        print(f"(c) naive task-per-event: {rate_c:,.0f} events/s ({args.naive_events:,} events)")
        bench.reset()
        rate_d = mixed(bench, args.mixed)
        print(f"(d) four platforms at once: {rate_d:,.0f} events/s ({4 * args.mixed:,} events)")
        print(
            f"targets: (a) {rate_a / 30_000:.2f}x of 30,000/s; (b) {rate_b / 10_000:.2f}x of "
            f"10,000/s; (b)/(c) = {rate_b / rate_c:.1f} (target >= 20)"
        )
    finally:
        bench.procs.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
