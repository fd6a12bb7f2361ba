"""What a drain of one destination is: how it ended (`DrainStatus`), what it did
(`DrainReport`, the task's result in Flower) and what its batches share (`Drain`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from workers.lease import Lease, Start
from workers.request import Target
from workers.streams import DestinationStream


class DrainStatus(StrEnum):
    """How a drain of one destination ended."""

    SENT = "sent"  # at least one batch was settled, or none was due yet
    IDLE = "idle"  # nothing waiting
    BUSY = "busy"  # another drain holds the lease
    PAUSED = "paused"  # credentials or configuration need a person
    BACKING_OFF = "backing-off"  # a retry time has not come
    WAITING = "waiting"  # for rate tokens, an in-flight slot or a look-up
    FENCED = "fenced"  # the lease was taken over mid-drain: nothing more was settled
    UNKNOWN = "unknown-destination"  # no longer configured


@dataclass
class DrainReport:
    """What one drain did; returned by the task, so Flower shows it."""

    destination: str
    status: DrainStatus = DrainStatus.SENT
    batches: int = 0
    sent: int = 0
    delivered: int = 0
    dead: int = 0
    retry: int = 0
    http_status: int | None = None
    not_before_ms: int = 0  # the earliest the destination should be drained again
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict for the task result."""
        names = [f.name for f in fields(self) if f.name != "_lock"]
        out = {k: v for k in names if (v := getattr(self, k)) not in (None, 0)}
        return out | {"status": str(self.status)}

    def stop(self, status: DrainStatus, not_before_ms: int = 0) -> None:
        """End the drain with `status`, not to run again before `not_before_ms`."""
        with self._lock:
            if self.status in (DrainStatus.SENT, DrainStatus.IDLE):
                self.status = status
            self.not_before_ms = max(self.not_before_ms, not_before_ms)

    @property
    def stopped(self) -> bool:
        return self.status not in (DrainStatus.SENT, DrainStatus.IDLE)


@dataclass
class Drain:
    """One drain in progress: what its batches share (the engine and the settler take it)."""

    target: Target
    lease: Lease
    stream: DestinationStream
    report: DrainReport
    failures: int  # consecutive failed calls before this drain
    start: Start | None = None  # what taking the lease found


__all__ = ["Drain", "DrainReport", "DrainStatus"]
