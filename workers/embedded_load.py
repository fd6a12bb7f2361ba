"""The sample load of `convdispatch up`: enqueued a chunk at a time with a progress line,
its delivery shown until every backlog is empty, then one summary (what the platforms'
APIs accepted, and the Yandex uploads and vNative imports still processing on their side).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import redis
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dispatcher import Control, DestinationStatus, Dispatcher, Settings
from dispatcher.settings import PLATFORMS
from workers import demo, jobs
from workers.processes import Processes, StartError

if TYPE_CHECKING:
    from workers.embedded import Options

CHUNK = 1250  # purchases per enqueue call: 5,000 events, one atomic write per destination
JOB_NOUNS = {"yandex": "Yandex upload", "vnative": "vNative import"}
MAX_RESTARTS = 10  # in a minute: a component that keeps exiting ends the run


def deliver(
    settings: Settings, opts: Options, console: Console, procs: Processes, stop_hint: str
) -> int:
    """Send `opts.load` purchases, show their delivery and the summary, then keep the stack
    running (or wait for the platforms' jobs) as `opts` asks. 0 if every event was
    delivered or dead-lettered, else 1."""
    dispatcher = Dispatcher(settings)
    control = Control(dispatcher)
    names = list(settings.destinations)
    before = {n: control.status(n) for n in names}  # counters of earlier runs (--keep-data)
    accepted_before: dict[str, int] = {p: _sandbox_events(settings, p) for p in PLATFORMS}
    since_ms = int(time.time() * 1000)
    started = time.monotonic()
    receipts = _enqueue(dispatcher, opts.load, console, procs)
    _watch(names, control, console, procs, started)
    elapsed = time.monotonic() - started
    lines, delivered, dead = _summary(settings, dispatcher, before, accepted_before, elapsed)
    for line in lines:
        print_line(console, line)
    waiting, finished, open_jobs = _jobs(dispatcher.redis, since_ms)
    if waiting:
        print_line(console, f"still processing on the platforms' side: {waiting}")
    code = 0 if delivered + dead >= receipts else 1
    if code:
        print_line(
            console, f"{receipts - delivered - dead:,} events neither delivered nor dead-lettered"
        )
    if opts.exit_when_done and not opts.wait_jobs:
        return code
    if not opts.exit_when_done:
        print_line(console, f"running: Flower http://127.0.0.1:{opts.flower_port}; {stop_hint}")
    while open_jobs:
        _supervise(procs, console)
        time.sleep(0.5)
        waiting, finished, open_jobs = _jobs(dispatcher.redis, since_ms)
        if not open_jobs:
            took = time.monotonic() - started
            print_line(console, f"platform jobs finished after {took:.1f}s: {finished}")
    if opts.exit_when_done:
        return code
    while True:
        _supervise(procs, console)
        time.sleep(1)


def _enqueue(dispatcher: Dispatcher, load: int, console: Console, procs: Processes) -> int:
    """Enqueue `load` sample purchases a chunk at a time, showing progress; the receipts."""
    seed = int(time.time()) % 100_000
    began, receipts = time.monotonic(), 0
    with _progress(console, load) as advance:
        for start in range(0, load, CHUNK):
            chunk = demo.purchases(min(CHUNK, load - start), seed=seed, start=start)
            receipts += sum(len(f.receipts) for f in dispatcher.enqueue_conversions(chunk))
            advance(start + len(chunk), receipts, time.monotonic() - began)
            _supervise(procs, console)
    took = time.monotonic() - began
    print_line(
        console,
        f"enqueued {load:,} purchases as {receipts:,} platform events in {took:.1f}s "
        f"({receipts / max(took, 1e-9):,.0f} events/s)",
    )
    return receipts


@contextmanager
def _progress(console: Console, total: int) -> Iterator[Callable[[int, int, float], None]]:
    """advance(done, events, elapsed_s): a live bar on a terminal, else a line every 5 s."""
    if console.is_terminal:
        bar = Progress(
            TextColumn("enqueueing"), BarColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), console=console, transient=True,
        )  # fmt: skip
        task = bar.add_task(f"0 of {total:,} purchases", total=total)
        with bar:
            yield lambda done, events, s: bar.update(
                task, completed=done, description=_enqueued(done, total, events, s)
            )
        return
    last = [time.monotonic()]

    def line(done: int, events: int, s: float) -> None:
        if time.monotonic() - last[0] >= 5 and done < total:
            last[0] = time.monotonic()
            print_line(console, f"enqueueing: {_enqueued(done, total, events, s)}")

    yield line


def _enqueued(done: int, total: int, events: int, elapsed_s: float) -> str:
    rate = events / max(elapsed_s, 1e-9)
    return f"{done:,} of {total:,} purchases ({events:,} events, {rate:,.0f} events/s)"


def _watch(
    names: list[str], control: Control, console: Console, procs: Processes, started: float
) -> None:
    """Show delivery progress until every destination's backlog (in flight included) is 0."""
    last = time.monotonic()
    live = Live(console=console, refresh_per_second=4, transient=True)
    with live if console.is_terminal else nullcontext(live):
        while True:
            statuses = [control.status(n) for n in names]
            if console.is_terminal:
                live.update(_table(statuses, time.monotonic() - started))
            if all(s.backlog == 0 for s in statuses):
                return
            if not console.is_terminal and time.monotonic() - last >= 5:
                last = time.monotonic()
                waiting = ", ".join(
                    f"{s.destination} {s.backlog:,} ({s.in_flight:,} in flight)"
                    for s in statuses
                    if s.backlog
                )
                print_line(console, f"delivering after {last - started:.0f}s, backlog: {waiting}")
            _supervise(procs, console)
            time.sleep(0.25)


def _summary(
    settings: Settings,
    dispatcher: Dispatcher,
    before: dict[str, DestinationStatus],
    accepted_before: dict[str, int],
    elapsed_s: float,
) -> tuple[list[str], int, int]:
    """The summary's lines (per destination: delivered, dead, what its sandbox accepted)."""
    control = Control(dispatcher)
    rows, delivered, dead = [], 0, 0
    for name, old in before.items():
        s = control.status(name)
        d, x = s.delivered - old.delivered, s.dead - old.dead
        delivered, dead = delivered + d, dead + x
        accepted = _sandbox_events(settings, s.platform) - accepted_before[s.platform]
        rows.append(
            f"  {name}: {d:,} delivered, {x:,} dead-lettered; its sandbox accepted {accepted:,}"
        )
    head = (
        f"summary: backlog empty after {elapsed_s:.1f}s: {delivered:,} events delivered to "
        f"the platforms' APIs ({delivered / max(elapsed_s, 1e-9):,.0f} events/s), "
        f"{dead:,} dead-lettered"
    )
    return [head, *rows], delivered, dead


def _jobs(client: redis.Redis, since_ms: int) -> tuple[str, str, int]:
    """This run's Yandex uploads and vNative imports, as (what the platforms still process,
    with the states of all; all of them once finished; how many are still open)."""
    waiting_parts, all_parts, open_jobs = [], [], 0
    for platform, noun in JOB_NOUNS.items():
        run_jobs = [
            j for j in jobs.recent(client, platform, 10_000) if j.submitted_at_ms >= since_ms
        ]
        if not run_jobs:
            continue
        waiting = sum(not j.finished for j in run_jobs)
        failed = sum(j.failed for j in run_jobs)
        states = ", ".join(f"{st} {n}" for st, n in Counter(j.state for j in run_jobs).items())
        if failed:
            states += f"; {failed} failed, their events dead-lettered"
        nouns = noun if len(run_jobs) == 1 else f"{noun}s"
        waiting_parts.append(f"{waiting} of {len(run_jobs)} {nouns} ({states})")
        all_parts.append(f"{len(run_jobs)} {nouns} ({states})")
        open_jobs += waiting
    return "; ".join(waiting_parts), "; ".join(all_parts), open_jobs


def _supervise(procs: Processes, console: Console) -> None:
    """Restart a component that exited, and say so; give up on one that keeps exiting."""
    for name in procs.supervise():
        if procs.restarts_within(name, 60) >= MAX_RESTARTS:
            raise StartError(f"{name} keeps exiting (log: {procs.logs / name}.log)")
        print_line(
            console, f"[yellow]{name} exited; restarted[/] (log: {procs.logs / name}.log)", True
        )


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


def sandbox_port(settings: Settings, platform: str) -> int:
    """The sandbox listens where the settings send the platform's requests."""
    return urlsplit(settings.platform(platform).base_url).port or 80


def _sandbox_events(settings: Settings, platform: str) -> int:
    url = f"http://127.0.0.1:{sandbox_port(settings, platform)}/_sandbox/count"
    try:
        return int(httpx.get(url, timeout=5).json().get("events", 0))
    except (httpx.HTTPError, ValueError):
        return -1


def print_line(console: Console, text: str, markup: bool = False) -> None:
    """One line, never wrapped (logs and tests read it whole), even with the terminal gone
    (SIGHUP)."""
    with suppress(OSError):
        console.print(text, markup=markup, highlight=False, soft_wrap=True)
