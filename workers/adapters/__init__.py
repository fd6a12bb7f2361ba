"""One adapter per platform: events in, an `httpx.Request` out; a response in, verdicts out.

Adapters do no I/O. The delivery engine owns the client, the limiter, retries and acks.
Each platform module `workers.adapters.<platform>` exposes its adapter as `ADAPTER`.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from workers.adapters.base import (
    Adapter,
    EventResult,
    JobAdapter,
    JobState,
    Outcome,
    Verdict,
    follows_jobs,
    whole_batch,
)


@cache
def adapter_for(platform: str) -> Adapter:
    """The adapter of a platform, found by convention."""
    adapter: Adapter = import_module(f"workers.adapters.{platform}").ADAPTER
    return adapter


__all__ = [
    "Adapter",
    "EventResult",
    "JobAdapter",
    "JobState",
    "Outcome",
    "Verdict",
    "adapter_for",
    "follows_jobs",
    "whole_batch",
]
