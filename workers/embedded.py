"""`convdispatch up`: the whole stack on one machine, no Docker, no system Redis.

Starts an embedded redis-server (unless CONVDISP_REDIS_URL names one), the sandboxes,
one Celery worker per platform queue and Flower; enqueues a sample load; shows
delivery progress; prints a summary; and stops everything on Ctrl-C.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dispatcher import Control, DeadLetters, DestinationStatus, Dispatcher, Settings, keys
from dispatcher.settings import PLATFORMS
from workers import demo, jobs
from workers.processes import (
    Processes,
    flower_command,
    redis_command,
    sandbox_command,
    wait_for_http,
    wait_for_redis,
    worker_command,
)

CONFIG = Path(__file__).resolve().parent.parent / "config" / "embedded.toml"


@dataclass
class Options:
    """What `convdispatch up` was asked to do."""

    load: int = 5_000
    var: Path = Path("var/embedded")
    redis_port: int = 6390
    flower_port: int = 5555
    exit_when_done: bool = False
    keep_data: bool = False


def run(opts: Options, console: Console) -> int:
    """Run the stack until Ctrl-C (or until the load is delivered, with exit_when_done)."""
    env = {"CONVDISP_CONFIG": os.environ.get("CONVDISP_CONFIG", str(CONFIG))}
    procs = Processes(opts.var / "logs", env)
    try:
        if "CONVDISP_REDIS_URL" not in os.environ:
            (opts.var / "redis").mkdir(parents=True, exist_ok=True)
            procs.start("redis", redis_command(opts.redis_port, (opts.var / "redis").resolve()))
            env["CONVDISP_REDIS_URL"] = f"redis://127.0.0.1:{opts.redis_port}/0"
        os.environ.update(env)
        settings = Settings()
        wait_for_redis(settings.redis_url)
        if "redis" in procs.children and not opts.keep_data:
            # The sandboxes start empty, so jobs and events of an earlier demo would not
            # match them: the embedded Redis starts empty too (never a Redis you named).
            Dispatcher(settings).redis.flushdb()
        console.print(f"[green]redis[/] {settings.redis_url} (AOF in {opts.var / 'redis'})")
        for platform in PLATFORMS:
            procs.start(f"sandbox-{platform}", sandbox_command(platform, _port(settings, platform)))
            procs.start(f"worker-{platform}", worker_command([platform], 1, name=platform))
        procs.start("flower", flower_command(opts.flower_port))
        for platform in PLATFORMS:
            procs.wait_for_log(f"worker-{platform}", " ready.")
        wait_for_http(f"http://127.0.0.1:{opts.flower_port}/healthcheck", 60)
        console.print(f"[green]workers ready[/]; Flower: http://127.0.0.1:{opts.flower_port}")
        return _deliver(settings, opts, console, procs)
    except KeyboardInterrupt:
        console.print("\n[yellow]stopping[/] (events not yet delivered stay in Redis)")
        return 130
    finally:
        procs.stop()
        console.print("[green]stopped[/]: redis, sandboxes, workers, flower")


def _deliver(settings: Settings, opts: Options, console: Console, procs: Processes) -> int:
    dispatcher = Dispatcher(settings)
    control, dead = Control(dispatcher), DeadLetters(dispatcher)
    names = list(settings.destinations)
    conversions = demo.purchases(opts.load, seed=int(time.time()) % 100_000)
    started = time.monotonic()
    receipts = 0
    for i in range(0, len(conversions), 1000):
        for fanned in dispatcher.enqueue_conversions(conversions[i : i + 1000]):
            receipts += len(fanned.receipts)
    console.print(
        f"enqueued {len(conversions)} purchases as {receipts} platform events "
        f"in {time.monotonic() - started:.2f}s"
    )
    drained_at = None
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            statuses = [control.status(n) for n in names]
            live.update(_table(statuses, time.monotonic() - started))
            if drained_at is None and all(s.backlog == 0 for s in statuses):
                drained_at = time.monotonic()
            # Yandex uploads and vNative imports finish on the platform's side later.
            open_jobs = sum(dispatcher.redis.zcard(keys.open_jobs(p)) for p in PLATFORMS)
            if drained_at is not None and not open_jobs:
                break
            _supervise(procs, console)
            time.sleep(0.25)
    console.print()
    elapsed = drained_at - started
    delivered = sum(control.status(n).delivered for n in names)
    dead_count = sum(dead.count(p) for p in PLATFORMS)
    accepted = {p: _sandbox_total(settings, p) for p in PLATFORMS}
    console.print(
        f"[bold]summary[/]: {delivered} delivered, {dead_count} dead-lettered in "
        f"{elapsed:.1f}s ({delivered / elapsed:,.0f} events/s); sandboxes accepted {accepted}"
    )
    for platform in PLATFORMS:
        states = Counter(job.state for job in jobs.recent(dispatcher.redis, platform, 1000))
        if states:
            console.print(f"{platform} background jobs: {dict(states)}")
    console.print(f"Flower: http://127.0.0.1:{opts.flower_port}  -  Ctrl-C to stop")
    if opts.exit_when_done:
        return 0 if delivered + dead_count >= receipts else 1
    while True:
        _supervise(procs, console)
        time.sleep(1)


def _supervise(procs: Processes, console: Console) -> None:
    """Restart a component that exited, and say so."""
    for name in procs.supervise():
        console.print(f"[yellow]{name} exited; restarted[/] (log: {procs.logs / name}.log)")


def _table(statuses: list[DestinationStatus], elapsed_s: float) -> Table:
    table = Table(title=f"delivery progress ({elapsed_s:.1f}s)")
    for column in ("destination", "backlog", "in flight", "delivered", "dead", "state"):
        table.add_column(column)
    for s in statuses:
        state = f"paused: {s.pause_reason}" if s.paused else (s.last_error or "ok")
        table.add_row(
            s.destination, str(s.backlog), str(s.in_flight), str(s.delivered), str(s.dead), state
        )
    return table


def _port(settings: Settings, platform: str) -> int:
    """The sandbox listens where the settings send the platform's requests."""
    return urlsplit(settings.platform(platform).base_url).port or 80


def _sandbox_total(settings: Settings, platform: str) -> int:
    url = f"http://127.0.0.1:{_port(settings, platform)}/_sandbox/received?summary=1"
    try:
        return int(httpx.get(url, timeout=5).json().get("total_events", 0))
    except (httpx.HTTPError, ValueError):
        return -1
