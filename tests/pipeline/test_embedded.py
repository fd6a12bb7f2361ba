"""`convdispatch up`, the README's run command, end to end on free ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.settings import PLATFORMS
from tests.conftest import wait_for
from workers.processes import free_port

pytestmark = pytest.mark.pipeline


def up(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    ports: dict[str, int] = {"redis": free_port(), "flower": free_port()}
    ports |= {p: free_port() for p in PLATFORMS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVDISP_")}
    for platform in PLATFORMS:
        env[f"CONVDISP_{platform.upper()}__BASE_URL"] = f"http://127.0.0.1:{ports[platform]}"
    command = [
        sys.executable, "-m", "workers.cli", "up", "--var", str(tmp_path / "var"),
        "--redis-port", str(ports["redis"]), "--flower-port", str(ports["flower"]), *args,
    ]  # fmt: skip
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return child, ports


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_delivers_the_sample_load_to_all_four_sandboxes(tmp_path: Path) -> None:
    # Given a fresh machine's view: no Redis running, nothing configured but the defaults
    # When the README's run command runs until its sample load is delivered
    child, ports = up(tmp_path, "--load", "200", "--exit-when-done")
    output, _ = child.communicate(timeout=180)
    # Then it succeeded, every platform's sandbox accepted its 200 events, nothing died,
    # it printed the Flower URL, and it stopped every process it started
    assert child.returncode == 0, output
    assert re.search(r"800 delivered, 0 dead-lettered", output), output
    for platform in PLATFORMS:
        assert f"'{platform}': 200" in output
    assert f"http://127.0.0.1:{ports['flower']}" in output
    assert not any(listening(port) for port in ports.values())


def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    child, ports = up(tmp_path, "--load", "20")
    assert child.stdout is not None
    seen: list[str] = []

    def ready() -> bool:
        line = child.stdout.readline() if child.stdout else ""
        seen.append(line)
        return "Ctrl-C to stop" in line or child.poll() is not None

    wait_for(ready, 180, "the summary")
    assert child.poll() is None, "".join(seen)
    assert listening(ports["flower"])
    # When the operator presses Ctrl-C
    child.send_signal(signal.SIGINT)
    output, _ = child.communicate(timeout=60)
    # Then it says so and nothing it started is left listening
    assert "stopped" in output
    assert not any(listening(port) for port in ports.values())
