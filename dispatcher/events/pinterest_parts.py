"""Nested objects of a Pinterest conversion event: `custom_data`, `app_info`, `device_info`.

Source: Pinterest's official contract v5.23.0, as for the event itself (in `pinterest`). Every
field of these objects is here with its type and bounds; amounts are strings, as Pinterest
takes them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from dispatcher.currencies import Currency
from dispatcher.events.base import STRICT, FreeText
from dispatcher.validation import decimal_text

_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")

# The contract's `format: int64`: a larger integer is not one Pinterest can read.
Int = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]


class Part(BaseModel):
    """Base of the event's nested objects: no unknown field, aliases accepted, strings stripped."""

    model_config = STRICT


def _number_str(value: object) -> object:
    """Pinterest takes amounts as strings it parses into doubles."""
    value = decimal_text(value)
    if isinstance(value, str) and not _NUMBER.match(value.strip()):
        raise ValueError("must be a decimal number such as 72.39")
    return value


Amount = Annotated[str, BeforeValidator(_number_str)]


class Content(Part):
    """One product of `custom_data.contents`."""

    id: str | None = None
    item_brand: FreeText | None = None
    item_category: FreeText | None = None
    item_name: FreeText | None = None
    item_price: Amount | None = None
    quantity: Int | None = None


class CustomData(Part):
    """Order details: value, currency, products."""

    content_brand: FreeText | None = None
    content_category: FreeText | None = None
    content_ids: list[str] | None = None
    content_name: FreeText | None = None
    contents: list[Content] | None = None
    currency: Currency | None = None
    external_measurement_id: str | None = None
    external_measurement_vendor_id: Int | None = None
    np: str | None = None
    num_items: Int | None = None
    opt_out_type: str | None = None
    order_id: str | None = None
    predicted_ltv: Amount | None = None
    search_string: FreeText | None = None
    value: Amount | None = None


def _text(max_length: int) -> Any:
    return Field(default=None, max_length=max_length)


def _count(maximum: int | None = None) -> Any:
    return Field(default=None, ge=0, le=2**63 - 1 if maximum is None else maximum, strict=True)


FormFactor = Literal["desktop", "laptop", "cellphone", "tablet", "smartwatch", "tv", "vr"]
NetworkType = Literal["wifi", "cellular_2g", "cellular_3g", "cellular_4g", "cellular_5g"]
OsFamily = Literal["ios", "android", "macos", "windows", "linux", "bsd", "other"]


class AppInfo(Part):
    """The app the event happened in (`app_info`)."""

    app_id: str | None = _text(200)
    app_name: str | None = _text(200)
    app_package_name: str | None = _text(200)
    app_store: str | None = _text(100)
    app_version: str | None = _text(100)
    install_time: int | None = _count()
    user_agent: str | None = _text(16384)
    window_height: int | None = _count(30720)
    window_width: int | None = _count(30720)


class DeviceInfo(Part):
    """The device the event happened on (`device_info`)."""

    battery_level: int | None = _count(100)
    brand: str | None = _text(100)
    carrier: str | None = _text(100)
    cpu_cores: int | None = _count(1152)
    external_storage_free_space: int | None = _count(1048576)
    external_storage_size: int | None = _count(1048576)
    form_factor: FormFactor | Literal["console", "other"] | None = None
    kernel_version: str | None = _text(100)
    languages: list[str] | None = Field(default=None, max_length=100)
    locale: str | None = _text(35)
    model: str | None = _text(100)
    network_type: NetworkType | Literal["cellular_6g", "ethernet", "unknown"] | None = None
    os_family: OsFamily | None = None
    os_name: str | None = _text(100)
    os_release_name: str | None = _text(100)
    os_version: str | None = _text(100)
    screen_density: int | None = _count(100000)
    screen_height: int | None = _count(30720)
    screen_width: int | None = _count(30720)
    storage_free_space: int | None = _count(1048576)
    storage_size: int | None = _count(1048576)
    timezone: str | None = _text(40)
    timezone_abbr: str | None = _text(5)
    type: str | None = _text(100)
