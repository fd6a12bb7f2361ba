"""Typed conversion events, one module per platform, and the registry that maps names to them."""

from __future__ import annotations

from dispatcher.events.base import PlatformEvent
from dispatcher.events.linkedin import (
    ConversionUser,
    ConversionValue,
    IdType,
    LinkedInConversionEvent,
    UserId,
    UserInfo,
)

MODELS: dict[str, type[PlatformEvent]] = {"linkedin": LinkedInConversionEvent}

__all__ = [
    "MODELS",
    "ConversionUser",
    "ConversionValue",
    "IdType",
    "LinkedInConversionEvent",
    "PlatformEvent",
    "UserId",
    "UserInfo",
]
