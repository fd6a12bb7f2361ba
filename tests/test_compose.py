"""docker-compose.yml cannot run here (no Docker), so its shape is checked instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dispatcher.settings import PLATFORMS

ROOT = Path(__file__).resolve().parent.parent


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(loaded["services"])


def test_there_is_a_worker_per_platform_queue_plus_flower_and_no_beat() -> None:
    found = services()
    for platform in PLATFORMS:
        command = found[f"worker-{platform}"]["command"]
        assert command[command.index("-Q") + 1] == f"convdispatch.{platform}"
    assert "beat" not in found  # every worker schedules its own queues
    assert "flower" in found["flower"]["command"]


def test_redis_keeps_events_across_restarts() -> None:
    redis = services()["redis"]
    conf = (ROOT / "config" / "redis.conf").read_text()
    assert "appendonly yes" in conf
    assert "maxmemory-policy noeviction" in conf
    assert "\nmaxmemory " in conf
    assert any("redis.conf" in volume for volume in redis["volumes"])
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_every_app_service_reads_the_same_configuration() -> None:
    for name, service in services().items():
        if name == "redis":
            continue
        assert service["environment"]["CONVDISP_REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
