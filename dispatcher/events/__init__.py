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
from dispatcher.events.pinterest import PinterestConversionEvent
from dispatcher.events.vnative import VNativeConversion
from dispatcher.events.yandex import YandexOfflineConversion


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
    "PinterestConversionEvent",
    "PlatformEvent",
    "UserId",
    "UserInfo",
    "VNativeConversion",
    "YandexOfflineConversion",
    "model_for",
]
