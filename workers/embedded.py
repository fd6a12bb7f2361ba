"""`convdispatch up`: the whole stack on one machine, no Docker, no system Redis.

Starts an embedded redis-server (unless CONVDISP_REDIS_URL names one), the sandboxes,
one Celery worker per platform queue and Flower, each counted as started only once the
child itself holds its port and gives the answer expected of it; enqueues a sample load
with a progress line; shows delivery progress; prints one summary when the backlog is
empty (what the platforms' APIs accepted, and the Yandex uploads and vNative imports
still processing on their side); and stops everything on Ctrl-C, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
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
from workers.processes import (
    PortTakenError,
    Processes,
    StartError,
    flower_command,
    port_holder,
    redis_command,
    sandbox_command,
    wait_for_redis,
    worker_command,
)

CONFIG = Path(__file__).resolve().parent.parent / "config" / "embedded.toml"
CHUNK = 1250  # purchases per enqueue call: 5,000 events, one atomic write per destination
JOB_NOUNS = {"yandex": "Yandex upload", "vnative": "vNative import"}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MAX_RESTARTS = 10  # in a minute: a component that keeps exiting ends the run
# The embedded vNative sandbox takes this many calls a minute per key (imports and polls);
# config/embedded.toml splits it between rate_per_min and poll_rate_per_min.
EMBEDDED_VNATIVE_RATE = 600


@dataclass
class Options:
    """What `convdispatch up` was asked to do."""

    load: int = 20_000
    var: Path = Path("var/embedded")
    redis_port: int = 6390
    flower_port: int = 5555
    exit_when_done: bool = False
    keep_data: bool = False
    wait_jobs: bool = False


class Stopped(BaseException):
    """Raised in the main thread when SIGINT, SIGTERM or SIGHUP arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run(opts: Options, console: Console, errors: Console | None = None) -> int:
    """Run the stack until a stop signal (or until the load is delivered, with exit_when_done).

    Returns the exit code: 0 done, 1 a component did not start (one line on `errors`),
    128 + the signal's number when stopped by one.
    """
    errors = errors or console
    env = {"CONVDISP_CONFIG": os.environ.get("CONVDISP_CONFIG", str(CONFIG))}
    procs = Processes(opts.var / "logs", env)
    failed = False
    with _stop_signals() as stop_hint:
        try:
            settings = _start(opts, console, procs, env)
            return _deliver(settings, opts, console, procs, stop_hint)
        except Stopped as stop:
            _line(console, f"\n[yellow]stopping[/] on {stop} (undelivered events stay)", True)
            return 128 + stop.signum
        except StartError as exc:
            failed = True
            errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            return 1
        finally:
            _ignore_stop_signals()  # a second Ctrl-C must not cut the cleanup short
            started, stopping = list(procs.children), time.monotonic()
            procs.stop()
            if started and not failed:
                took = time.monotonic() - stopping
                _line(console, f"[green]stopped[/] in {took:.1f}s: {', '.join(started)}", True)


def _start(opts: Options, console: Console, procs: Processes, env: dict[str, str]) -> Settings:
    """Start every component and check each is really ours and answering; raise StartError."""
    began = time.monotonic()
    own_redis = "CONVDISP_REDIS_URL" not in os.environ
    if own_redis:
        env["CONVDISP_REDIS_URL"] = f"redis://127.0.0.1:{opts.redis_port}/0"
    os.environ.update(env)
    settings = Settings()
    sandboxes = {p: _port(settings, p) for p in PLATFORMS}
    ports = {"redis": opts.redis_port} if own_redis else {}
    ports |= {f"sandbox-{p}": port for p, port in sandboxes.items()} | {"flower": opts.flower_port}
    hints = {
        f"sandbox-{p}": f"CONVDISP_{p.upper()}__BASE_URL=http://127.0.0.1:<port>" for p in PLATFORMS
    }
    hints |= {"flower": "--flower-port", "redis": "--redis-port"}
    _check_ports(ports, hints)
    try:
        if own_redis:
            data = (opts.var / "redis").resolve()
            data.mkdir(parents=True, exist_ok=True)
            procs.start("redis", redis_command(opts.redis_port, data))
            procs.verify("redis", opts.redis_port, partial(_pings, opts.redis_port), 30)
            if not opts.keep_data:
                # The sandboxes start empty, so jobs and events of an earlier demo would not
                # match them: the embedded Redis starts empty too (never a Redis you named).
                with redis.Redis(port=opts.redis_port) as client:
                    client.flushdb()
            _line(console, f"[green]redis[/] {settings.redis_url} (AOF in {data})", True)
        else:
            try:
                wait_for_redis(settings.redis_url, 15)
            except redis.RedisError as exc:
                raise StartError(f"Redis at CONVDISP_REDIS_URL does not answer: {exc}") from None
            _line(console, f"[green]redis[/] {settings.redis_url} (CONVDISP_REDIS_URL)", True)
        for platform, port in sandboxes.items():
            # vNative's sandbox allows 60 calls a minute per key; the demo config sends 600
            limit = EMBEDDED_VNATIVE_RATE if platform == "vnative" else None
            procs.start(f"sandbox-{platform}", sandbox_command(platform, port, limit))
            procs.start(f"worker-{platform}", worker_command([platform], 1, name=platform))
        procs.start("flower", flower_command(opts.flower_port))
        for platform, port in sandboxes.items():
            procs.verify(f"sandbox-{platform}", port, partial(_sandbox_answers, port), 30)
        urls = ", ".join(f"{p} http://127.0.0.1:{port}" for p, port in sandboxes.items())
        _line(console, f"[green]sandboxes[/] {urls}", True)
        for platform in PLATFORMS:
            _wait_ready(procs, f"worker-{platform}")
        procs.verify("flower", opts.flower_port, partial(_flower_answers, opts.flower_port), 90)
    except PortTakenError as exc:
        name = next((n for n, p in ports.items() if p == exc.port), "")
        raise StartError(f"{exc}: choose another with {hints.get(name, 'another port')}") from None
    took = time.monotonic() - began
    ready = f"({', '.join(PLATFORMS)}); Flower: http://127.0.0.1:{opts.flower_port} ({took:.1f}s)"
    _line(console, f"[green]workers ready[/] {ready}", True)
    env_line = f"CONVDISP_CONFIG={env['CONVDISP_CONFIG']} CONVDISP_REDIS_URL={settings.redis_url}"
    _line(console, f"inspect from another shell: {env_line} convdispatch status")
    return settings


def _check_ports(ports: dict[str, int], hints: dict[str, str]) -> None:
    """Before anything starts: every port given once, and nobody listening on it."""
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise StartError(
                f"port {port} is given to both {seen[port]} and {name}: "
                f"choose another with {hints[name]}"
            )
        seen[port] = name
        holder = port_holder(port)
        if holder is not None:
            raise StartError(f"port {port} is taken ({holder}): choose another with {hints[name]}")


def _wait_ready(procs: Processes, name: str) -> None:
    try:
        procs.wait_for_log(name, " ready.", 90)
    except (RuntimeError, TimeoutError):
        code = procs.children[name].poll()
        what = "did not get ready in 90s" if code is None else f"exited with {code}"
        raise StartError(f"{name} {what} (log: {procs.logs / name}.log)") from None


def _pings(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=1) as client:
        return bool(client.ping())


def _sandbox_answers(port: int) -> bool:
    body = httpx.get(f"http://127.0.0.1:{port}/_sandbox/count", timeout=1).json()
    return isinstance(body, dict) and "events" in body


def _flower_answers(port: int) -> bool:
    response = httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1)
    return response.status_code == 200 and response.text == "OK"


def _deliver(
    settings: Settings, opts: Options, console: Console, procs: Processes, stop_hint: str
) -> int:
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
        _line(console, line)
    waiting, finished, open_jobs = _jobs(dispatcher.redis, since_ms)
    if waiting:
        _line(console, f"still processing on the platforms' side: {waiting}")
    code = 0 if delivered + dead >= receipts else 1
    if code:
        _line(
            console, f"{receipts - delivered - dead:,} events neither delivered nor dead-lettered"
        )
    if opts.exit_when_done and not opts.wait_jobs:
        return code
    if not opts.exit_when_done:
        _line(console, f"running: Flower http://127.0.0.1:{opts.flower_port}; {stop_hint}")
    while open_jobs:
        _supervise(procs, console)
        time.sleep(0.5)
        waiting, finished, open_jobs = _jobs(dispatcher.redis, since_ms)
        if not open_jobs:
            took = time.monotonic() - started
            _line(console, f"platform jobs finished after {took:.1f}s: {finished}")
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
    _line(
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
            _line(console, f"enqueueing: {_enqueued(done, total, events, s)}")

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
                _line(console, f"delivering after {last - started:.0f}s, backlog: {waiting}")
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
        _line(console, f"[yellow]{name} exited; restarted[/] (log: {procs.logs / name}.log)", True)


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


def _sandbox_events(settings: Settings, platform: str) -> int:
    url = f"http://127.0.0.1:{_port(settings, platform)}/_sandbox/count"
    try:
        return int(httpx.get(url, timeout=5).json().get("events", 0))
    except (httpx.HTTPError, ValueError):
        return -1


@contextmanager
def _stop_signals() -> Iterator[str]:
    """SIGINT, SIGTERM and SIGHUP raise `Stopped` in the block (run it in the main thread);
    yields how to stop. A SIGINT the environment ignores (a background job of a
    non-interactive shell) stays ignored, and the hint names SIGTERM instead."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    sigint_ignored = previous[signal.SIGINT] == signal.SIG_IGN
    for sig in STOP_SIGNALS:
        if not (sig == signal.SIGINT and sigint_ignored):
            signal.signal(sig, _raise_stopped)
    try:
        pid = os.getpid()
        ignored = f"kill {pid} (SIGTERM) to stop; Ctrl-C is ignored in this shell"
        yield ignored if sigint_ignored else f"Ctrl-C (or kill {pid}) to stop"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    _ignore_stop_signals()  # the first signal stops; more must not interrupt the stopping
    raise Stopped(signum)


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is _raise_stopped:
            signal.signal(sig, signal.SIG_IGN)


def _line(console: Console, text: str, markup: bool = False) -> None:
    """One line, never wrapped (logs and tests read it whole), even with the terminal gone
    (SIGHUP)."""
    with suppress(OSError):
        console.print(text, markup=markup, highlight=False, soft_wrap=True)
