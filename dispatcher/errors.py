"""Every error the dispatcher raises, in one tree.

    DispatcherError
    ├── ConfigurationError      settings or a destination are unusable
    ├── InvalidEventError       an event failed validation (also a ValueError)
    ├── BackpressureError       a destination's backlog is at its cap, or Redis is nearly full
    └── StorageError            Redis could not be reached or answered with an error

Redis exceptions are translated into `StorageError` once, at the boundary
(`dispatcher.storage.translate_redis_errors`), so callers never need to import redis.
Secrets never appear in any message: tokens are `SecretStr` and are only unwrapped
when a request is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DispatcherError(Exception):
    """Raised for any failure of the dispatcher; the base of the tree."""

    # What a bulk call had stored before it raised (receipts of earlier chunks), if any.
    stored: Sequence[object] = ()


class ConfigurationError(DispatcherError):
    """Raised when settings, a destination or its credentials are missing or invalid."""


class UnknownDestinationError(ConfigurationError):
    """Raised when a destination id is not (or no longer) configured."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of one event."""

    field: str
    message: str
    index: int | None = None

    def __str__(self) -> str:
        where = f"[{self.index}] " if self.index is not None else ""
        return f"{where}{self.field}: {self.message}"


class InvalidEventError(DispatcherError, ValueError):
    """Raised when an event fails validation; `errors` names every bad field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} invalid field(s):\n{lines}")

    @property
    def fields(self) -> list[str]:
        """The names of the bad fields, in the order they were found."""
        return [e.field for e in self.errors]


class BackpressureError(DispatcherError):
    """Raised when enqueueing would push a destination's backlog past its cap, or when
    Redis's memory is past `memory_high_watermark` of its `maxmemory` (`destination` "*")."""

    def __init__(self, destination: str, backlog: int, cap: int, message: str = "") -> None:
        self.destination, self.backlog, self.cap = destination, backlog, cap
        super().__init__(
            message
            or f"destination {destination!r} holds {backlog} undelivered events and its cap "
            f"is {cap}: nothing was enqueued; slow down or raise max_backlog"
        )

    @classmethod
    def memory(cls, watermark: float) -> BackpressureError:
        """Redis holds more than `watermark` of its maxmemory."""
        return cls(
            "*", 0, 0,
            f"Redis is past {watermark:.0%} of its maxmemory: nothing was enqueued; "
            "workers are draining it, retry later",
        )  # fmt: skip


class StorageError(DispatcherError):
    """Raised when Redis is unreachable or rejects a command."""
