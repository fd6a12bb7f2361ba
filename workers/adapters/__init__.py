"""One adapter per platform: events in, an `httpx.Request` out; a response in, verdicts out.

Adapters do no I/O. The delivery engine owns the client, the limiter, retries and acks.
"""

from __future__ import annotations

from workers.adapters.base import Adapter, EventResult, Outcome, Verdict
from workers.adapters.linkedin import LinkedInAdapter

ADAPTERS: dict[str, Adapter] = {"linkedin": LinkedInAdapter()}

__all__ = ["ADAPTERS", "Adapter", "EventResult", "Outcome", "Verdict"]
