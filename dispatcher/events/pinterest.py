"""Pinterest Conversions API v5 events, as `POST /v5/ad_accounts/{id}/events` takes them.

Source: Pinterest's official contract v5.23.0 (shipped as
`sandboxes/pinterest-v5-conversion-events.openapi.json`) and seed 001. Every field
of the contract is here with its type and bounds (the nested `custom_data`, `app_info` and
`device_info` objects in `pinterest_parts`). Stricter than the contract on purpose:
`user_data` takes no unknown field (a misspelt one would carry raw personal data out
unhashed), the enums its descriptions list are enforced, and hashed fields must not be empty.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field, field_validator, model_validator

from dispatcher.events.base import FreeText, PlatformEvent, aware_to_epoch, check_event_time
from dispatcher.events.pinterest_parts import AppInfo, Content, CustomData, DeviceInfo, Int, Part
from dispatcher.identity import hash_email, hash_name, is_sha256, phone_digits, sha256_hex

__all__ = [
    "EVENT",
    "ActionSource",
    "AppInfo",
    "Content",
    "CustomData",
    "DeviceInfo",
    "EventName",
    "PinterestConversionEvent",
    "UserData",
]

# The contract names no maximum age: the configured PinterestSettings.acceptance_window_s
# (7 days by default) is checked at enqueue (`window_errors`).
_MS_EPOCH_FLOOR_S = 100_000_000_000  # a "seconds" value above this is milliseconds (year 5138)
_GENDERS = {"f": "f", "female": "f", "m": "m", "male": "m", "n": "n", "non-binary": "n"}

Bool = Annotated[bool, Field(strict=True)]


def _kept(raw: str) -> str | None:
    """A SHA-256 digest given by the caller, lowercased; None for raw values."""
    value = raw.strip()
    return value.lower() if is_sha256(value) else None


def _rule(
    normal: Callable[[str], str], ok: Callable[[str], object], why: str
) -> Callable[[str], str]:
    """Normalise a raw value, refuse it with `why` unless `ok`, and hash it."""

    def run(raw: str) -> str:
        value = normal(raw)
        if not ok(value):
            raise ValueError(why)
        return sha256_hex(value)

    return run


def _date_digits(raw: str) -> str:
    digits = re.sub(r"[-/. ]", "", raw.strip())
    try:
        return date.fromisoformat(digits).strftime("%Y%m%d") if len(digits) == 8 else ""
    except ValueError:  # not a real date, or ISO forms other than YYYYMMDD
        return ""


def _zip_code(raw: str) -> str:
    # The contract: "Sha256 hashes of user's zipcode, only digits" (ZIP+4 keeps all nine).
    return re.sub(r"[\s-]", "", raw.strip())


def _lower(raw: str) -> str:
    return raw.strip().lower()


# Pinterest's phone rule: digits only, with country code, "remove ... leading zeros".
_phone = _rule(
    phone_digits,
    lambda v: 7 <= len(v) <= 15,  # E.164 numbers have at most 15 digits
    "is not a phone number with country code",
)
_gender = _rule(lambda v: _GENDERS.get(_lower(v), ""), bool, "must be f, m or n")
_birth_date = _rule(_date_digits, bool, "must be a date as YYYYMMDD or YYYY-MM-DD")
_city = _rule(lambda v: "".join(c for c in v.lower() if c.isalnum()), bool, "is empty")
_two_letters = _rule(_lower, re.compile(r"[a-z]{2}").fullmatch, "must be a two-letter code")
_postal = _rule(
    _zip_code, re.compile(r"[0-9]{3,10}").fullmatch, "must be a postal code of digits only"
)
_external = _rule(str.strip, bool, "is empty")  # the advertiser's own id: case kept
_maid = _rule(_lower, bool, "is empty")  # IDFAs come uppercase, GAIDs lowercase


def _hashed(normalise: Callable[[str], str], dates: bool = False) -> BeforeValidator:
    """One string or a list of them, each normalised and hashed (digests kept as given);
    with `dates`, a `date` is taken too (the birth date)."""

    def each(value: object) -> object:
        if value is None:
            return None
        items = [value] if isinstance(value, str | date) else value
        if not isinstance(items, list | tuple) or not items:
            raise ValueError("must be a string or a non-empty list of strings")
        hashed = []
        for i, item in enumerate(items):
            if dates and isinstance(item, date):
                item = item.strftime("%Y%m%d")
            if not isinstance(item, str):
                raise ValueError(f"item {i} must be a string")
            try:
                hashed.append(_kept(item) or normalise(item))
            except ValueError as exc:
                raise ValueError(f"item {i} {exc}") from None
        return hashed

    return BeforeValidator(each)


Hashes = list[str] | None


class EventName(StrEnum):
    """The event names the contract lists (`event_name`)."""

    ADD_PAYMENT_INFO = "add_payment_info"
    ADD_TO_CART = "add_to_cart"
    ADD_TO_WISHLIST = "add_to_wishlist"
    APP_INSTALL = "app_install"
    CHECKOUT = "checkout"
    CUSTOM = "custom"
    INITIATE_CHECKOUT = "initiate_checkout"
    LEAD = "lead"
    PAGE_VISIT = "page_visit"
    SEARCH = "search"
    SIGNUP = "signup"
    SUBSCRIBE = "subscribe"
    VIEW_CATEGORY = "view_category"
    VIEW_CONTENT = "view_content"
    WATCH_VIDEO = "watch_video"


class ActionSource(StrEnum):
    """Where the conversion happened (`action_source`)."""

    APP_ANDROID = "app_android"
    APP_IOS = "app_ios"
    WEB = "web"
    OFFLINE = "offline"


class UserData(Part):
    """Who converted: `em`, `hashed_maids`, or both `client_ip_address` and `client_user_agent`.

    Raw values are normalised as Pinterest specifies and SHA-256 hashed here; each field takes
    one string or a list, and 64-hex digests pass through unchanged.
    """

    em: Annotated[Hashes, _hashed(hash_email)] = None
    ph: Annotated[Hashes, _hashed(_phone)] = None
    ge: Annotated[Hashes, _hashed(_gender)] = None
    db: Annotated[Hashes, _hashed(_birth_date, dates=True)] = None
    fn: Annotated[Hashes, _hashed(hash_name)] = None
    ln: Annotated[Hashes, _hashed(hash_name)] = None
    ct: Annotated[Hashes, _hashed(_city)] = None
    st: Annotated[Hashes, _hashed(_two_letters)] = None
    zp: Annotated[Hashes, _hashed(_postal)] = None
    country: Annotated[Hashes, _hashed(_two_letters)] = None
    external_id: Annotated[Hashes, _hashed(_external)] = None
    hashed_maids: Annotated[Hashes, _hashed(_maid)] = None
    client_ip_address: str | None = None
    client_user_agent: str | None = Field(default=None, min_length=1)
    click_id: str | None = None
    partner_id: str | None = None

    @field_validator("client_ip_address")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        try:
            return None if value is None else str(ipaddress.ip_address(value))
        except ValueError:  # its message would repeat the address
            raise ValueError("is not an IPv4 or IPv6 address") from None

    @model_validator(mode="after")
    def _identifiable(self) -> UserData:
        pair = self.client_ip_address and self.client_user_agent
        if not (self.em or self.hashed_maids or pair):
            raise ValueError(
                "needs em, hashed_maids, or both client_ip_address and client_user_agent"
            )
        return self


class PinterestConversionEvent(PlatformEvent):
    """One conversion for a Pinterest ad account.

    `event_time` takes Unix seconds or an aware `datetime`, not in the future; `enqueue`
    refuses one older than `pinterest.acceptance_window_s` (7 days by default). Without
    an `event_id` one is derived from the content.
    """

    platform: ClassVar[str] = "pinterest"
    time_field: ClassVar[str] = "event_time"
    event_id_field: ClassVar[str] = "event_id"

    event_name: EventName
    action_source: ActionSource
    event_time: Int
    event_id: str | None = Field(default=None, min_length=1)
    user_data: UserData
    custom_data: CustomData | None = None
    event_source_url: FreeText | None = None
    opt_out: Bool | None = None
    partner_name: str | None = None
    app_id: str | None = None
    app_name: str | None = None
    app_version: str | None = None
    app_info: AppInfo | None = None
    device_brand: str | None = None
    device_carrier: str | None = None
    device_model: str | None = None
    device_type: str | None = None
    device_info: DeviceInfo | None = None
    os_version: str | None = None
    wifi: Bool | None = None
    language: str | None = None

    @field_validator("event_time", mode="before")
    @classmethod
    def _datetime_to_s(cls, value: object) -> object:
        return aware_to_epoch(value)

    @field_validator("event_time")
    @classmethod
    def _in_window(cls, value: int) -> int:
        if value > _MS_EPOCH_FLOOR_S:
            raise ValueError("looks like milliseconds: Pinterest takes Unix seconds")
        check_event_time(value * 1000)
        return value

    def happened_at_ms(self) -> int:
        return self.event_time * 1000

    def given_event_id(self) -> str | None:
        return self.event_id


EVENT = PinterestConversionEvent
