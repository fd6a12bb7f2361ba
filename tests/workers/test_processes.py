"""The embedded run's processes: supervision, checking who holds a port, and children that
cannot outlive their parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from dispatcher.check import redis_findings
from tests.conftest import wait_for
from workers import processes
from workers.processes import (
    PortTakenError,
    Processes,
    alive,
    descendants,
    embedded_maxmemory,
    free_port,
    listening_inodes,
    port_holder,
    redis_command,
    sandbox_command,
    socket_inodes,
    wait_for_redis,
)


def test_a_killed_component_is_restarted_with_its_data(tmp_path: Path) -> None:
    # Given an embedded Redis holding a key, under supervision
    port = free_port()
    (tmp_path / "data").mkdir()
    procs = Processes(tmp_path / "logs")
    procs.start("redis", redis_command(port, tmp_path / "data"))
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url)
    client = redis.Redis.from_url(url)
    # (set up as `convdispatch check` asks: AOF, a maxmemory, noeviction)
    assert [f.level for f in redis_findings(client)] == ["ok", "ok"]
    assert client.config_get("maxmemory")["maxmemory"] == str(embedded_maxmemory())
    assert 0 < embedded_maxmemory() <= 2 << 30
    client.config_set("appendfsync", "always")
    client.set("kept", "yes")
    try:
        first = procs.children["redis"].pid
        # When it is SIGKILLed
        procs.children["redis"].send_signal(signal.SIGKILL)
        procs.children["redis"].wait(10)
        # Then supervision starts it again, with its data (AOF)
        assert procs.supervise() == ["redis"]
        assert procs.children["redis"].pid != first
        wait_for_redis(url)
        assert wait_for(lambda: client.get("kept"), 10) == b"yes"
        assert procs.restarts == {"redis": 1}
        assert "restarting" in procs.log("redis")
        assert procs.supervise() == []  # a running child is left alone
    finally:
        client.close()
        procs.stop()


def test_verify_accepts_the_child_that_holds_its_port(tmp_path: Path) -> None:
    # Given an embedded Redis started under supervision
    port = free_port()
    procs = Processes(tmp_path / "logs")
    procs.start("redis", redis_command(port, tmp_path))
    client = redis.Redis(port=port)
    try:
        # When it is verified by its answer on its port
        procs.verify("redis", port, lambda: bool(client.ping()), 20)
        # Then it counts as started: the port's listener is that very child
        assert listening_inodes(port) & socket_inodes(procs.children["redis"].pid)
    finally:
        client.close()
        procs.stop()


def test_an_answer_from_another_process_on_the_port_is_not_accepted(tmp_path: Path) -> None:
    # Given another process (this one) listening on the port, and a child that has not
    # bound it (as a Flower that failed to)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        procs = Processes(tmp_path / "logs")
        procs.start("flower", [sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            # When the child is verified with a check any HTTP answer would pass
            # Then the port is reported taken, by whom
            with pytest.raises(
                PortTakenError, match=f"port {port} is taken \\(by pid {os.getpid()}"
            ):
                procs.verify("flower", port, lambda: True, 10)
        finally:
            procs.stop()


def test_a_child_that_cannot_bind_its_port_names_who_holds_it(tmp_path: Path) -> None:
    # Given a port taken by another process
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert port_holder(port) == f"by pid {os.getpid()}, {_comm(os.getpid())}"
        # When a sandbox is started on it (it exits: address in use)
        procs = Processes(tmp_path / "logs")
        procs.start("sandbox", sandbox_command("linkedin", port))
        try:
            # Then verifying it says the port is taken, not merely that it exited
            with pytest.raises(PortTakenError) as taken:
                procs.verify("sandbox", port, lambda: True, 30)
            assert taken.value.port == port
        finally:
            procs.stop()
    assert port_holder(port) is None


def test_children_die_with_their_parent_even_by_sigkill(tmp_path: Path) -> None:
    # Given a parent process that started a child through Processes
    script = (
        "import sys, time; from pathlib import Path; from workers.processes import Processes; "
        f"p = Processes(Path({str(tmp_path)!r})); c = p.start('sleeper', ['sleep', '60']); "
        "print(c.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    child = descendants(parent.pid)
    assert child_pid in child
    # When the parent is SIGKILLed (no cleanup of its own can run)
    parent.kill()
    parent.wait(10)
    parent.stdout.close()
    # Then the child gets its parent-death signal
    wait_for(lambda: alive(child) == [], 10, "the child to die")


def test_stop_leaves_no_process_of_a_childs_group(tmp_path: Path) -> None:
    # Given a child whose own child ignores SIGTERM (as a stuck pool process might)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    script = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {stubborn!r}]); time.sleep(60)"
    )
    procs = Processes(tmp_path / "logs")
    procs.start("parent", [sys.executable, "-c", script])
    pid = procs.children["parent"].pid
    wait_for(lambda: len(descendants(pid)) == 1, 10, "the grandchild")
    started = {pid: descendants(os.getpid())[pid], **descendants(pid)}
    # When the stack is stopped
    procs.stop(timeout_s=5)
    # Then the leader went on SIGTERM and its group's straggler was killed too
    wait_for(lambda: alive(started) == [], 10, "every process of the group to end")


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_the_embedded_maxmemory_follows_redis_conf_a_container_and_a_failed_reading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = Path(__file__).parents[2] / "config" / "redis.conf"
    assert "maxmemory 2gb" in conf.read_text().splitlines()  # the cap, as the file has it
    assert processes.REDIS_CONF_MAXMEMORY == 2 << 30
    # A container's cgroup limit is the memory there is: a quarter of its 512 MiB
    limit, unlimited = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    limit.write_text("536870912\n")
    unlimited.write_text("9223372036854771712\n")  # cgroup v1 "no limit"
    monkeypatch.setattr(processes, "CGROUP_LIMITS", (str(unlimited), str(limit)))
    assert embedded_maxmemory() == 128 << 20
    limit.write_text("max\n")  # cgroup v2 "no limit": the machine's memory
    assert 0 < embedded_maxmemory() <= 2 << 30
    # sysconf without an answer (-1) or without the name: 256 MiB, never a negative size
    monkeypatch.setattr(os, "sysconf", lambda name: -1)
    assert embedded_maxmemory() == 256 << 20

    def unsupported(name: str) -> int:
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(os, "sysconf", unsupported)
    assert embedded_maxmemory() == 256 << 20
