"""`convdispatch up`: the whole stack on one machine, no Docker, no system Redis.

Starts an embedded redis-server (unless CONVDISP_REDIS_URL names one), the sandboxes,
one Celery worker per platform queue and Flower, each counted as started only once the
child itself holds its port and gives the answer expected of it; sends the sample load
(`workers.embedded_load`: progress, delivery, one summary when the backlog is empty); and
stops everything on Ctrl-C, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import httpx
import redis
from rich.console import Console

from dispatcher import Settings
from dispatcher.settings import PLATFORMS, redacted
from workers.embedded_load import deliver, print_line, sandbox_port
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
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The embedded vNative sandbox takes this many calls a minute per key (imports and polls);
# config/embedded.toml splits it between rate_per_min and poll_rate_per_min.
EMBEDDED_VNATIVE_RATE = 600
LOOPBACK = frozenset(("127.0.0.1", "localhost", "::1"))


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
            return deliver(settings, opts, console, procs, stop_hint)
        except Stopped as stop:
            print_line(console, f"\n[yellow]stopping[/] on {stop} (undelivered events stay)", True)
            return 128 + stop.signum
        except StartError as exc:
            failed = True
            errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            return 1
        finally:
            _ignore_stop_signals()  # a second Ctrl-C must not cut the cleanup short
            # In the order they stop: the others in reverse start order, Redis (the
            # workers' broker) last.
            others = [name for name in reversed(procs.children) if name != "redis"]
            started = others + [name for name in procs.children if name == "redis"]
            stopping = time.monotonic()
            procs.stop()
            if started and not failed:
                took = time.monotonic() - stopping
                print_line(console, f"[green]stopped[/] in {took:.1f}s: {', '.join(started)}", True)


def _start(opts: Options, console: Console, procs: Processes, env: dict[str, str]) -> Settings:
    """Start every component and check each is really ours and answering; raise StartError."""
    began = time.monotonic()
    own_redis = "CONVDISP_REDIS_URL" not in os.environ
    if own_redis:
        env["CONVDISP_REDIS_URL"] = f"redis://127.0.0.1:{opts.redis_port}/0"
    os.environ.update(env)
    settings = Settings()
    _only_sandboxes(settings)
    sandboxes = {p: sandbox_port(settings, p) for p in PLATFORMS}
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
            print_line(
                console, f"[green]redis[/] {redacted(settings.redis_url)} (AOF in {data})", True
            )
        else:
            try:
                wait_for_redis(settings.redis_url, 15)
            except redis.RedisError as exc:
                raise StartError(f"Redis at CONVDISP_REDIS_URL does not answer: {exc}") from None
            print_line(
                console,
                f"[green]redis[/] {redacted(settings.redis_url)} (CONVDISP_REDIS_URL)",
                True,
            )
        for platform, port in sandboxes.items():
            # vNative's sandbox allows 60 calls a minute per key; the demo config sends 600
            limit = EMBEDDED_VNATIVE_RATE if platform == "vnative" else None
            procs.start(f"sandbox-{platform}", sandbox_command(platform, port, limit))
            procs.start(f"worker-{platform}", worker_command([platform], 1, name=platform))
        procs.start("flower", flower_command(opts.flower_port))
        for platform, port in sandboxes.items():
            procs.verify(f"sandbox-{platform}", port, partial(_sandbox_answers, port), 30)
        urls = ", ".join(f"{p} http://127.0.0.1:{port}" for p, port in sandboxes.items())
        print_line(console, f"[green]sandboxes[/] {urls}", True)
        for platform in PLATFORMS:
            _wait_ready(procs, f"worker-{platform}")
        procs.verify("flower", opts.flower_port, partial(_flower_answers, opts.flower_port), 90)
    except PortTakenError as exc:
        name = next((n for n, p in ports.items() if p == exc.port), "")
        raise StartError(f"{exc}: choose another with {hints.get(name, 'another port')}") from None
    took = time.monotonic() - began
    ready = f"({', '.join(PLATFORMS)}); Flower: http://127.0.0.1:{opts.flower_port} ({took:.1f}s)"
    print_line(console, f"[green]workers ready[/] {ready}", True)
    url = redacted(settings.redis_url)
    env_line = f"CONVDISP_CONFIG={env['CONVDISP_CONFIG']} CONVDISP_REDIS_URL={url}"
    print_line(console, f"inspect from another shell: {env_line} convdispatch status")
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


def _only_sandboxes(settings: Settings) -> None:
    """Refuse (StartError) a configuration that would send the sample load, or a token
    refresh, anywhere but the sandboxes `up` starts on this machine (`CONVDISP_CONFIG`
    naming a production file, say)."""
    urls = {f"{p}.base_url": settings.platform(p).base_url for p in PLATFORMS}
    if any(d.oauth is not None for d in settings.destinations.values()):
        urls["linkedin.oauth_url"] = settings.linkedin.oauth_url
    for name, url in urls.items():
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK:
            where = f"{parts.scheme}://{parts.hostname or ''}"
            raise StartError(
                f"{name} is {where}, not a local sandbox: up sends a sample load, so every "
                "platform must point at http://127.0.0.1:<port>, where up starts its sandbox "
                "(set CONVDISP_CONFIG to config/embedded.toml, or unset it)"
            )


def _sandbox_answers(port: int) -> bool:
    body = httpx.get(f"http://127.0.0.1:{port}/_sandbox/count", timeout=1).json()
    return isinstance(body, dict) and "events" in body


def _flower_answers(port: int) -> bool:
    response = httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1)
    return response.status_code == 200 and response.text == "OK"


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
