"""The README's code runs as written against the embedded stack (`convdispatch up`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher import Control, Dispatcher, Settings
from tests.conftest import wait_for
from tests.pipeline.test_embedded import Up, up  # noqa: F401 (the fixture)

pytestmark = pytest.mark.pipeline
ROOT = Path(__file__).resolve().parents[2]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_every_python_example_of_the_readme_runs_and_is_delivered(
    up: Callable[..., Up],  # noqa: F811
) -> None:
    # Given the embedded stack, running with no sample load
    run = up("--load", "0")
    run.wait_for_line("summary:", 240)
    redis_url = f"redis://127.0.0.1:{run.ports['redis']}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVDISP_")}
    env |= {
        "CONVDISP_CONFIG": str(ROOT / "config" / "embedded.toml"),
        "CONVDISP_REDIS_URL": redis_url,
    }
    blocks = python_blocks()
    assert blocks, "the README has no python example"
    # When each example runs as written
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
    # Then what they print is what the README says they print
    out = done.stdout.splitlines()
    assert "linkedin-demo" in out[0]
    assert out[1:] == ["[]", "100 []", "30"]
    # And the workers deliver every event they enqueued
    settings = Settings(
        _env_file=None, redis_url=redis_url,
        **{k: v for k, v in _embedded().items() if k in ("destinations", "routes")},
    )  # fmt: skip
    expected = {"linkedin-demo": 12, "pinterest-demo": 11, "yandex-demo": 1, "vnative-demo": 111}
    with Dispatcher(settings) as producer:
        control = Control(producer)

        def delivered() -> dict[str, int]:
            return {n: control.status(n).delivered for n in expected}

        wait_for(lambda: delivered() == expected, 120, f"delivery of {expected}")
    run.child.send_signal(signal.SIGTERM)
    run.finish()
    assert run.leftovers() == []


def _embedded() -> dict[str, object]:
    import tomllib

    loaded: dict[str, object] = tomllib.loads((ROOT / "config" / "embedded.toml").read_text())
    return loaded
