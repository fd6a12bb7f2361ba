"""One platform-neutral conversion (`dispatcher.fanout` turns it into platform events).

    enqueue(Conversion(event="purchase", happened_at=now, value=Decimal("49.90"),
                       currency="EUR", event_id="order-1001", email="a@b.com",
                       li_fat_id=..., epik=..., yandex_client_id=..., vnative_click_id=...))

Its fields are the union of what the four platforms take; the README's "Conversion
fields per platform" table says where each goes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from dispatcher.currencies import Currency
from dispatcher.events.base import STRICT, FreeText
from dispatcher.identity import hash_email, is_sha256, masked, phone_digits
from dispatcher.validation import Refusing, decimal_text, epoch_seconds, located


def _amount(value: Decimal | None) -> Decimal | None:
    if value is not None:
        decimal_text(value)  # raises ValueError for what no platform can take as an amount
    return value


# A non-negative amount every platform can be sent (`Decimal(49.9)` has 50 decimal places).
Amount = Annotated[Decimal, Field(ge=0, lt=Decimal(10) ** 15), AfterValidator(_amount)]

# The platform models' rules, and frozen (validated again when handed over all the same:
# `model_copy(update=...)` skips validation).
_PART = ConfigDict(**STRICT, frozen=True)


class Item(BaseModel):
    """One product of the conversion (Pinterest `custom_data.contents`)."""

    model_config = _PART

    id: str | None = Field(default=None, min_length=1)
    name: FreeText | None = None
    price: Amount | None = None
    quantity: int | None = Field(default=None, ge=0, le=2**63 - 1, strict=True)
    category: FreeText | None = None
    brand: FreeText | None = None


class App(BaseModel):
    """The app the conversion happened in (Pinterest app fields)."""

    model_config = _PART

    id: str | None = None
    name: str | None = None
    version: str | None = None


class Device(BaseModel):
    """The device the conversion happened on (Pinterest device fields)."""

    model_config = _PART

    brand: str | None = None
    carrier: str | None = None
    model: str | None = None
    type: str | None = None
    os_version: str | None = None
    language: str | None = None
    wifi: StrictBool | None = None


class Conversion(Refusing):
    """Something a user did that an advertiser wants every platform to hear about.
    Construction raises `InvalidEventError` naming each bad field. The README's
    "Conversion fields per platform" table says where each field goes."""

    model_config = _PART

    event: str = Field(min_length=1, description="What happened; routes match on it.")
    happened_at: datetime
    value: Amount | None = None
    currency: Currency | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    li_fat_id: str | None = Field(default=None, description="LinkedIn click id")
    epik: str | None = Field(default=None, description="Pinterest click id (_epik)")
    yandex_client_id: str | None = Field(default=None, description="Metrica ClientId")
    yandex_user_id: str | None = Field(default=None, description="your site's user id")
    yclid: str | None = None
    vnative_click_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    external_id: str | None = Field(
        default=None, min_length=1, description="your id of the user (LinkedIn externalIds)"
    )
    company: str | None = Field(default=None, description="LinkedIn userInfo.companyName")
    title: str | None = Field(default=None, description="LinkedIn userInfo.title")
    country: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2}$", description="ISO 3166 alpha-2"
    )
    order_id: str | None = Field(default=None, min_length=1, description="default: event_id")
    content_ids: list[str] | None = None
    contents: list[Item] | None = None
    num_items: int | None = Field(default=None, ge=0, le=2**63 - 1, strict=True)
    action_source: str | None = Field(default=None, description="overrides the route's")
    event_source_url: FreeText | None = None
    partner_name: str | None = None
    opt_out: StrictBool | None = None
    advertiser_tracking_enabled: StrictBool | None = Field(
        default=None, description="Meta-style app flag; Pinterest gets opt_out = not it"
    )
    app: App | None = None
    device: Device | None = None
    subs: dict[str, FreeText] | None = Field(
        default=None, description="vNative sub1..sub10, over the route's"
    )

    @field_validator("email")
    @classmethod
    def _an_email(cls, value: str | None) -> str | None:
        if value is not None:
            hash_email(value)  # the platforms' own check: raises for what none could match
        return value

    @field_validator("phone")
    @classmethod
    def _a_phone(cls, value: str | None) -> str | None:
        if value is None or is_sha256(value.strip().lower()):
            return value
        if not 7 <= len(phone_digits(value)) <= 15:
            raise ValueError("is not a phone number (7 to 15 digits) or a SHA-256 digest")
        return value

    @field_validator("subs")
    @classmethod
    def _sub_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        allowed = {f"sub{i}" for i in range(1, 11)}
        for key in value or {}:
            if key not in allowed:
                raise ValueError(f"key {masked(key)!r} is not one of sub1..sub10")
        return value

    @field_validator("happened_at", mode="before")
    @classmethod
    def _epoch_seconds(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(epoch_seconds(value)).astimezone()
            except (OverflowError, OSError) as exc:
                raise ValueError(f"is not a time a datetime can hold ({exc})") from None
        return value

    @field_validator("happened_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must be timezone-aware")
        return value

    @model_validator(mode="after")
    def _value_has_currency(self) -> Conversion:
        if self.value is not None and self.currency is None:
            raise located("Conversion", "currency", "is required with value", None)
        return self

    @property
    def seconds(self) -> int:
        """`happened_at` as Unix seconds."""
        return int(self.happened_at.timestamp())
