"""`convdispatch up`, the README's run command, end to end on free ports.

No test relies on SIGINT reaching `up` (a shell may start it with SIGINT ignored): they
stop it with SIGTERM, SIGHUP or SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dispatcher.settings import PLATFORMS
from tests.conftest import wait_for
from workers.processes import alive, descendants, free_ports

pytestmark = pytest.mark.pipeline
MARK = "UP_TEST_RUN"  # in the environment of `up` and so of every child


@dataclass
class Up:
    """A running `convdispatch up` whose output is read as it comes."""

    child: subprocess.Popen[str]
    ports: dict[str, int]
    mark: str
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout_s: float = 180) -> None:
        def seen() -> bool:
            assert self.child.poll() is None or text in self.output(), self.output()
            return text in self.output()

        wait_for(seen, timeout_s, f"{text!r} in the output")

    def finish(self, timeout_s: float = 60) -> str:
        self.child.wait(timeout_s)
        self._reader.join(10)
        return self.output()

    def leftovers(self) -> list[int]:
        """Processes still running whose environment carries this run's mark."""
        needle = f"{MARK}={self.mark}".encode()
        found = []
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0") and alive({pid: _start_time(pid)}):
                found.append(pid)
        return found

    def start_reading(self) -> None:
        def read() -> None:
            assert self.child.stdout is not None
            for line in self.child.stdout:
                self.lines.append(line)

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()


def _start_time(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError):
        return -1


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    runs: list[Up] = []

    def start(
        *args: str, ports: dict[str, int] | None = None, env: dict[str, str] | None = None
    ) -> Up:
        names = ("redis", "flower", *PLATFORMS)
        ports = dict(zip(names, free_ports(len(names)), strict=True)) | (ports or {})
        mark = uuid.uuid4().hex
        given = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVDISP_")}
        env[MARK] = mark
        for platform in PLATFORMS:
            env[f"CONVDISP_{platform.upper()}__BASE_URL"] = f"http://127.0.0.1:{ports[platform]}"
        env |= given
        command = [
            sys.executable, "-m", "workers.cli", "up", "--var", str(tmp_path / "var"),
            "--redis-port", str(ports["redis"]), "--flower-port", str(ports["flower"]), *args,
        ]  # fmt: skip
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        run = Up(child, ports, mark)
        run.start_reading()
        runs.append(run)
        return run

    yield start
    for run in runs:  # a failed test must not leave a stack running
        if run.child.poll() is None:
            run.child.kill()
            run.child.wait(10)
        run._reader.join(10)
        if run.child.stdout is not None:
            run.child.stdout.close()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_taken_port_fails_in_one_line_that_names_it_and_the_option(up: Callable[..., Up]) -> None:
    # Given another program listening on the port Flower should take
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        # When `up` runs
        run = up("--load", "10", "--exit-when-done", ports={"flower": port})
        output = run.finish(60)
    # Then it fails with one line naming the port, who holds it and the option to change,
    # and nothing it started is left
    assert run.child.returncode == 1, output
    assert output.strip().splitlines() == [
        f"error: port {port} is taken (by pid {os.getpid()}, {_comm()}): "
        "choose another with --flower-port"
    ]
    assert run.leftovers() == []
    assert not any(listening(p) for n, p in run.ports.items() if n != "flower")


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("CONVDISP_LINKEDIN__BASE_URL", "https://api.linkedin.com", "https://api.linkedin.com"),
        ("CONVDISP_PINTEREST__BASE_URL", "http://10.0.0.7:8702", "http://10.0.0.7"),
        ("CONVDISP_YANDEX__BASE_URL", "https://127.0.0.1:8703", "https://127.0.0.1"),
    ],
)
def test_a_platform_that_is_not_a_local_sandbox_stops_up_before_anything_starts(
    up: Callable[..., Up], variable: str, value: str, shown: str
) -> None:
    # Given a configuration that points one platform elsewhere than a sandbox on this
    # machine (a production config in CONVDISP_CONFIG would)
    run = up("--load", "10", "--exit-when-done", env={variable: value})
    output = run.finish(60)
    # Then `up` fails in one line naming the setting, before it starts or sends anything
    platform = variable.split("_")[1].lower()
    assert run.child.returncode == 1, output
    assert output.strip().splitlines() == [
        f"error: {platform}.base_url is {shown}, not a local sandbox: up sends a sample "
        "load, so every platform must point at http://127.0.0.1:<port>, where up starts "
        "its sandbox (set CONVDISP_CONFIG to config/embedded.toml, or unset it)"
    ]
    assert run.leftovers() == []
    assert not any(listening(p) for p in run.ports.values())


def test_a_production_config_in_convdispatch_config_is_refused(
    up: Callable[..., Up], tmp_path: Path
) -> None:
    # Given CONVDISP_CONFIG naming a file with the platforms' real URLs (the defaults) and a
    # LinkedIn destination that refreshes its token
    config = tmp_path / "host.toml"
    config.write_text(
        '[destinations.li]\nplatform = "linkedin"\n'
        'oauth = { client_id_env = "I", client_secret_env = "S", refresh_token_env = "R" }\n'
    )
    env = {
        f"CONVDISP_{p.upper()}__BASE_URL": f"http://localhost:{9000 + i}"
        for i, p in enumerate(PLATFORMS)
    }
    run = up("--load", "10", "--exit-when-done", env={"CONVDISP_CONFIG": str(config), **env})
    output = run.finish(60)
    # Then the token refresh, which would go to LinkedIn itself, stops it
    assert run.child.returncode == 1, output
    assert output.startswith(
        "error: linkedin.oauth_url is https://www.linkedin.com, not a local sandbox"
    )
    assert run.leftovers() == []


def _comm() -> str:
    return Path(f"/proc/{os.getpid()}/comm").read_text().strip()


def test_sample_load_and_its_platform_jobs_are_delivered(up: Callable[..., Up]) -> None:
    # Given a fresh machine's view: no Redis running, nothing configured but the defaults
    # When the README's run command runs until the platforms finished their jobs too
    run = up("--load", "200", "--exit-when-done", "--wait-jobs")
    output = run.finish(240)
    # Then every sandbox's API accepted its 200 events, nothing died, the Yandex upload and
    # the vNative import finished, it printed the Flower URL, and it stopped everything
    assert run.child.returncode == 0, output
    assert "800 events delivered to the platforms' APIs" in output, output
    assert "0 dead-lettered\n" in output
    for platform in PLATFORMS:
        assert f"{platform}-demo: 200 delivered, 0 dead-lettered; its sandbox accepted 200\n" in (
            output
        )
    assert "platform jobs finished after" in output
    assert re.search(r"finished after .*: \d+ Yandex uploads? \(PROCESSED \d+\)", output)
    assert re.search(r"; \d+ vNative imports? \(completed \d+\)", output)
    assert f"Flower: http://127.0.0.1:{run.ports['flower']}" in output
    assert "Ctrl-C" not in output  # it never ran without an end in sight
    assert run.leftovers() == []
    assert not any(listening(port) for port in run.ports.values())


def test_sigterm_stops_every_process_it_started(up: Callable[..., Up]) -> None:
    # Given `up` running after its summary, saying how to stop it
    run = up("--load", "20")
    run.wait_for_line("\nrunning: ")
    started = descendants(run.child.pid)
    assert len(started) >= 10, started  # redis, 4 sandboxes, 4 workers (and pools), flower
    assert listening(run.ports["flower"])
    # When it gets SIGTERM
    run.child.send_signal(signal.SIGTERM)
    output = run.finish(60)
    # Then it says so, exits 128 + 15, and no process it started is left
    assert run.child.returncode == 128 + signal.SIGTERM, output
    assert "stopping on SIGTERM" in output
    assert "stopped in" in output
    assert output.split("stopped in")[1].splitlines()[0].endswith(", redis")  # Redis last
    running, stopping = output.split("stopping on")
    assert "to stop" in running.split("\nrunning: ")[1]
    assert "to stop" not in stopping
    assert alive(started) == []
    assert run.leftovers() == []
    assert not any(listening(port) for port in run.ports.values())


def test_sighup_while_starting_leaves_nothing(up: Callable[..., Up]) -> None:
    # Given `up` in the middle of starting its components
    run = up("--load", "20")
    run.wait_for_line("sandboxes ")
    # When its terminal goes away (SIGHUP)
    run.child.send_signal(signal.SIGHUP)
    output = run.finish(60)
    # Then it stops like on Ctrl-C and leaves nothing behind
    assert run.child.returncode == 128 + signal.SIGHUP, output
    assert "stopping on SIGHUP" in output
    assert "to stop" not in output
    wait_for(lambda: run.leftovers() == [], 10, "no process left")


def test_sigkill_of_up_leaves_no_process_behind(up: Callable[..., Up]) -> None:
    # Given `up` with its whole stack started
    run = up("--load", "20")
    run.wait_for_line("workers ready")
    started = descendants(run.child.pid)
    assert len(started) >= 10, started
    # When it is SIGKILLed, so it can clean up nothing itself
    run.child.send_signal(signal.SIGKILL)
    run.finish(30)
    # Then its children die with it (parent-death signal) and theirs with them
    wait_for(lambda: alive(started) == [], 30, "every child to die")
    wait_for(lambda: run.leftovers() == [], 10, "no process left")
    wait_for(lambda: not any(listening(p) for p in run.ports.values()), 10, "ports closed")


@pytest.mark.timeout(420)
def test_twenty_thousand_purchases_exit_with_their_summary(up: Callable[..., Up]) -> None:
    # Given the README's bound for this command (timing is the README's figure, not here)
    # When `up --load 20000 --exit-when-done` runs
    run = up("--load", "20000", "--exit-when-done")
    output = run.finish(400)
    # Then it showed the enqueue, and printed one summary: every destination's 20,000
    # events taken by its platform's API, and what the platforms still process
    assert run.child.returncode == 0, output
    assert "enqueued 20,000 purchases as 80,000 platform events" in output, output
    assert output.count("summary: backlog empty after") == 1
    assert "80,000 events delivered to the platforms' APIs" in output
    for platform in PLATFORMS:
        line = f"{platform}-demo: 20,000 delivered, 0 dead-lettered; its sandbox accepted 20,000"
        assert line in output
    jobs = [line for line in output.splitlines() if "still processing" in line]
    assert len(jobs) <= 1
    assert "platform jobs finished" not in output  # it did not wait for them
    assert "Ctrl-C" not in output
    assert run.leftovers() == []
