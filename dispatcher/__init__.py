"""Conversion dispatcher: the producer side that application code imports.

    from dispatcher import enqueue, LinkedInConversionEvent

Validates and hashes events, stores them durably in Redis and asks the platform's
Celery workers to deliver them. Importing this package never imports worker code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from dispatcher.client import BulkReceipt, Dispatcher, EventInput, Receipt
from dispatcher.control import Control, DestinationStatus
from dispatcher.deadletters import DeadLetter, DeadLetters
from dispatcher.errors import (
    BackpressureError,
    ConfigurationError,
    DispatcherError,
    FieldError,
    InvalidEventError,
    StorageError,
)
from dispatcher.events import (
    ConversionUser,
    ConversionValue,
    IdType,
    LinkedInConversionEvent,
    UserId,
    UserInfo,
)
from dispatcher.settings import Destination, Settings, get_settings

_default: Dispatcher | None = None


def default_dispatcher() -> Dispatcher:
    """The process-wide `Dispatcher` built from `get_settings()`."""
    global _default
    if _default is None:
        _default = Dispatcher()
    return _default


def enqueue(event: EventInput, destination: str | None = None) -> Receipt:
    """Validate, hash and store one event with the default dispatcher."""
    return default_dispatcher().enqueue(event, destination)


def enqueue_many(
    events: Iterable[EventInput],
    destination: str | None = None,
    *,
    on_invalid: Literal["raise", "skip"] = "raise",
) -> BulkReceipt:
    """Validate, hash and store many events in one atomic call (see `Dispatcher`)."""
    return default_dispatcher().enqueue_many(events, destination, on_invalid=on_invalid)


async def aenqueue(event: EventInput, destination: str | None = None) -> Receipt:
    """The asyncio twin of `enqueue`."""
    return await default_dispatcher().aenqueue(event, destination)


async def aenqueue_many(
    events: Iterable[EventInput],
    destination: str | None = None,
    *,
    on_invalid: Literal["raise", "skip"] = "raise",
) -> BulkReceipt:
    """The asyncio twin of `enqueue_many`."""
    return await default_dispatcher().aenqueue_many(events, destination, on_invalid=on_invalid)


__all__ = [
    "BackpressureError",
    "BulkReceipt",
    "ConfigurationError",
    "Control",
    "ConversionUser",
    "ConversionValue",
    "DeadLetter",
    "DeadLetters",
    "Destination",
    "DestinationStatus",
    "Dispatcher",
    "DispatcherError",
    "FieldError",
    "IdType",
    "InvalidEventError",
    "LinkedInConversionEvent",
    "Receipt",
    "Settings",
    "StorageError",
    "UserId",
    "UserInfo",
    "aenqueue",
    "aenqueue_many",
    "default_dispatcher",
    "enqueue",
    "enqueue_many",
    "get_settings",
]
