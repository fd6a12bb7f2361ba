"""Typed conversion events, one module per platform.

Each platform module `dispatcher.events.<platform>` exposes its model as `EVENT`;
`model_for` finds it by convention, so adding a platform edits no shared registry.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from dispatcher.events.base import PlatformEvent
from dispatcher.events.linkedin import (
    ConversionUser,
    ConversionValue,
    IdType,
    LinkedInConversionEvent,
    UserId,
    UserInfo,
)


@cache
def model_for(platform: str) -> type[PlatformEvent]:
    """The event model of a platform."""
    model: type[PlatformEvent] = import_module(f"dispatcher.events.{platform}").EVENT
    return model


__all__ = [
    "ConversionUser",
    "ConversionValue",
    "IdType",
    "LinkedInConversionEvent",
    "PlatformEvent",
    "UserId",
    "UserInfo",
    "model_for",
]
