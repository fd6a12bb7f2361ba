"""Conversion dispatcher: the producer side that application code imports.

    from dispatcher import Conversion, enqueue

Validates and hashes events, stores them durably in Redis and asks the platform's
Celery workers to deliver them. Importing this package never imports worker code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, overload

from dispatcher.client import Dispatcher, EventInput
from dispatcher.control import Control, DestinationStatus
from dispatcher.conversion import Conversion
from dispatcher.deadletters import DeadLetter, DeadLetters, Selection
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
    PinterestConversionEvent,
    UserId,
    UserInfo,
    VNativeConversion,
    YandexOfflineConversion,
)
from dispatcher.receipts import BulkReceipt, FanOutReceipt, Receipt, Receipts
from dispatcher.settings import Destination, Settings, get_settings

_default: Dispatcher | None = None


def default_dispatcher() -> Dispatcher:
    """The process-wide `Dispatcher` built from `get_settings()`."""
    global _default
    if _default is None:
        _default = Dispatcher()
    return _default


def _no_destination(destination: object) -> None:
    """A Conversion goes where its routes say: a destination passed with one is a mistake."""
    if destination is not None:
        raise ConfigurationError(
            "a Conversion goes to the destinations its routes name: pass no destination"
        )


@overload
def enqueue(event: Conversion, destination: None = None) -> FanOutReceipt: ...
@overload
def enqueue(event: EventInput, destination: str | None = None) -> Receipt: ...
def enqueue(
    event: Conversion | EventInput, destination: str | None = None
) -> Receipt | FanOutReceipt:
    """Validate, hash and store one event with the default dispatcher.

    A platform-neutral `Conversion` fans out to every destination routed for its
    `event` and returns a `FanOutReceipt`; a platform event returns a `Receipt`.
    """
    if isinstance(event, Conversion):
        _no_destination(destination)
        return default_dispatcher().enqueue_conversion(event)
    return default_dispatcher().enqueue(event, destination)


def enqueue_many(
    events: Iterable[EventInput],
    destination: str | None = None,
    *,
    on_invalid: Literal["raise", "skip"] = "raise",
) -> BulkReceipt:
    """Validate, hash and store many events in one atomic call (see `Dispatcher`)."""
    return default_dispatcher().enqueue_many(events, destination, on_invalid=on_invalid)


@overload
async def aenqueue(event: Conversion, destination: None = None) -> FanOutReceipt: ...
@overload
async def aenqueue(event: EventInput, destination: str | None = None) -> Receipt: ...
async def aenqueue(
    event: Conversion | EventInput, destination: str | None = None
) -> Receipt | FanOutReceipt:
    """The asyncio twin of `enqueue`."""
    if isinstance(event, Conversion):
        _no_destination(destination)
        return await default_dispatcher().aenqueue_conversion(event)
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
    "Conversion",
    "ConversionUser",
    "ConversionValue",
    "DeadLetter",
    "DeadLetters",
    "Destination",
    "DestinationStatus",
    "Dispatcher",
    "DispatcherError",
    "EventInput",
    "FanOutReceipt",
    "FieldError",
    "IdType",
    "InvalidEventError",
    "LinkedInConversionEvent",
    "PinterestConversionEvent",
    "Receipt",
    "Receipts",
    "Selection",
    "Settings",
    "StorageError",
    "UserId",
    "UserInfo",
    "VNativeConversion",
    "YandexOfflineConversion",
    "aenqueue",
    "aenqueue_many",
    "default_dispatcher",
    "enqueue",
    "enqueue_many",
    "get_settings",
]
