"""One platform-neutral conversion, fanned out to every destination routed for it.

    enqueue(Conversion(event="purchase", happened_at=now, value=Decimal("49.90"),
                       currency="EUR", event_id="order-1001", email="a@b.com",
                       li_fat_id=..., epik=..., yandex_client_id=..., vnative_click_id=...))

Routes (settings `routes`, in config/) say which destinations take which `event`, with
each platform's rule, goal or event name. A destination is skipped, with the reason,
when the conversion lacks the identifiers that platform needs or breaks one of its rules
(Pinterest, for instance, takes only recent events); the others still get theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from dispatcher.currencies import Currency
from dispatcher.errors import InvalidEventError
from dispatcher.events.base import PlatformEvent
from dispatcher.settings import Destination, Route, Settings
from dispatcher.validation import Refusing, epoch_seconds, located

# Pinterest's event names for the usual neutral ones; anything else is "custom".
PINTEREST_EVENTS = {
    "purchase": "checkout",
    "checkout": "checkout",
    "add_to_cart": "add_to_cart",
    "lead": "lead",
    "signup": "signup",
    "page_visit": "page_visit",
    "search": "search",
    "view_category": "view_category",
    "watch_video": "watch_video",
}


class Conversion(Refusing):
    """Something a user did that an advertiser wants every platform to hear about.
    Construction raises `InvalidEventError` naming each bad field."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, frozen=True, allow_inf_nan=False
    )

    event: str = Field(min_length=1, description="What happened; routes match on it.")
    happened_at: datetime
    value: Decimal | None = Field(default=None, ge=0)
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


class Skip(Exception):  # noqa: N818 (a signal, not an error)
    """The conversion lacks what one destination needs; carries the reason."""


def _linkedin(c: Conversion, route: Route, dest: Destination) -> dict[str, Any]:
    user_ids = []
    if c.email:
        user_ids.append({"idType": "SHA256_EMAIL", "idValue": c.email})
    if c.li_fat_id:
        user_ids.append(
            {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": c.li_fat_id}
        )
    user: dict[str, Any] = {"userIds": user_ids}
    if c.first_name and c.last_name and dest.allow_plain_user_info:
        user["userInfo"] = {"firstName": c.first_name, "lastName": c.last_name}
    if not user_ids and "userInfo" not in user:
        raise Skip("needs email or li_fat_id (or names with allow_plain_user_info)")
    body: dict[str, Any] = {
        "conversion": route.conversion,
        "conversionHappenedAt": c.seconds * 1000,
        "user": user,
    }
    if c.value is not None:
        body["conversionValue"] = {"currencyCode": c.currency, "amount": str(c.value)}
    if c.event_id:
        body["eventId"] = c.event_id
    return body


def _pinterest(c: Conversion, route: Route, dest: Destination) -> dict[str, Any]:
    user: dict[str, Any] = {}
    if c.email:
        user["em"] = [c.email]
    if c.phone:
        user["ph"] = [c.phone]
    if c.first_name:
        user["fn"] = [c.first_name]
    if c.last_name:
        user["ln"] = [c.last_name]
    if c.ip and c.user_agent:
        user["client_ip_address"], user["client_user_agent"] = c.ip, c.user_agent
    if c.epik:
        user["click_id"] = c.epik
    if "em" not in user and "client_ip_address" not in user:
        raise Skip("needs email, or ip and user_agent")
    body: dict[str, Any] = {
        "event_name": route.event_name or PINTEREST_EVENTS.get(c.event, "custom"),
        "action_source": route.action_source,
        "event_time": c.seconds,
        "user_data": user,
    }
    if c.event_id:
        body["event_id"] = c.event_id
    custom: dict[str, Any] = {}
    if c.value is not None:
        custom |= {"currency": c.currency, "value": str(c.value)}
    if c.event_id:
        custom["order_id"] = c.event_id
    if custom:
        body["custom_data"] = custom
    return body


_YANDEX_IDS = {
    "CLIENT_ID": ("ClientId", "yandex_client_id"),
    "USER_ID": ("UserId", "yandex_user_id"),
    "YCLID": ("Yclid", "yclid"),
}


def _yandex(c: Conversion, route: Route, dest: Destination) -> dict[str, Any]:
    column, attribute = _YANDEX_IDS.get(dest.client_id_type, ("PurchaseId", "event_id"))
    identifier = getattr(c, attribute)
    if not identifier:
        raise Skip(f"needs {attribute} (the counter takes {dest.client_id_type})")
    body: dict[str, Any] = {column: identifier, "Target": route.target, "DateTime": c.seconds}
    if c.value is not None:
        body |= {"Price": str(c.value), "Currency": c.currency}
    return body


def _vnative(c: Conversion, route: Route, dest: Destination) -> dict[str, Any]:
    if not c.vnative_click_id:
        raise Skip("needs vnative_click_id")
    body: dict[str, Any] = {"click_id": c.vnative_click_id, "conversion_time": c.seconds}
    for sub in ("sub1", "sub2", "sub3"):
        if getattr(route, sub):
            body[sub] = getattr(route, sub)
    return body


BUILDERS: dict[str, Callable[[Conversion, Route, Destination], dict[str, Any]]] = {
    "linkedin": _linkedin,
    "pinterest": _pinterest,
    "yandex": _yandex,
    "vnative": _vnative,
}


def fan_out(
    conversion: Conversion,
    settings: Settings,
    validate: Callable[[dict[str, Any], str], PlatformEvent],
) -> tuple[list[tuple[str, PlatformEvent]], list[tuple[str, str]]]:
    """The platform events a conversion becomes, and the destinations skipped with why."""
    events: list[tuple[str, PlatformEvent]] = []
    skipped: list[tuple[str, str]] = []
    routes = [r for r in settings.routes if r.event == conversion.event]
    if not routes:
        skipped.append(("*", f"no route takes event {conversion.event!r}"))
    for route in routes:
        dest = settings.destination(route.destination)
        try:
            events.append(
                (
                    route.destination,
                    validate(BUILDERS[dest.platform](conversion, route, dest), route.destination),
                )
            )
        except Skip as reason:
            skipped.append((route.destination, str(reason)))
        except InvalidEventError as exc:
            skipped.append((route.destination, "; ".join(str(e) for e in exc.errors)))
    return events, skipped
