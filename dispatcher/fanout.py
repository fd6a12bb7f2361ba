"""A `Conversion` fanned out to every destination routed for it: one platform event each.

Routes (settings `routes`, in config/) say which destinations take which `event`, with
each platform's rule, goal or event name. A destination is skipped, with the reason,
when the conversion lacks the identifiers that platform needs or breaks one of its rules
(Pinterest, for instance, takes only recent events); the others still get theirs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from dispatcher.conversion import Conversion, Item
from dispatcher.errors import InvalidEventError
from dispatcher.events import model_for
from dispatcher.events.base import PlatformEvent
from dispatcher.identity import masked
from dispatcher.settings import Destination, Route, Settings
from dispatcher.validation import decimal_text

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
        info = {"firstName": c.first_name, "lastName": c.last_name}
        extra = {"companyName": c.company, "title": c.title, "countryCode": c.country}
        info |= {k: v.upper() if k == "countryCode" else v for k, v in extra.items() if v}
        user["userInfo"] = info
    if c.external_id:
        user["externalIds"] = [c.external_id]
    if not user_ids and "userInfo" not in user:
        raise Skip("needs email or li_fat_id (or names with allow_plain_user_info)")
    body: dict[str, Any] = {
        "conversion": route.conversion,
        "conversionHappenedAt": c.seconds * 1000,
        "user": user,
    }
    value, currency = _value(c, route)
    if value is not None:
        body["conversionValue"] = {"currencyCode": currency, "amount": _decimal(value)}
    if c.event_id:
        body["eventId"] = c.event_id
    return body


def _pinterest(c: Conversion, route: Route, dest: Destination) -> dict[str, Any]:
    user: dict[str, Any] = {}
    for key, value in (("em", c.email), ("ph", c.phone), ("fn", c.first_name),
                       ("ln", c.last_name), ("external_id", c.external_id)):  # fmt: skip
        if value:
            user[key] = [value]
    if c.country:
        user["country"] = [c.country.lower()]
    if c.ip and c.user_agent:
        user["client_ip_address"], user["client_user_agent"] = c.ip, c.user_agent
    if c.epik:
        user["click_id"] = c.epik
    if "em" not in user and "client_ip_address" not in user:
        raise Skip("needs email, or ip and user_agent")
    body: dict[str, Any] = {
        "event_name": route.event_name or PINTEREST_EVENTS.get(c.event, "custom"),
        "action_source": c.action_source or route.action_source,
        "event_time": c.seconds,
        "user_data": user,
    }
    if c.event_id:
        body["event_id"] = c.event_id
    opt_out = c.opt_out
    if opt_out is None and c.advertiser_tracking_enabled is not None:
        opt_out = not c.advertiser_tracking_enabled
    top: dict[str, Any] = {"event_source_url": c.event_source_url, "opt_out": opt_out,
           "partner_name": c.partner_name or route.partner_name}  # fmt: skip
    if c.app is not None:
        top |= {"app_id": c.app.id, "app_name": c.app.name, "app_version": c.app.version}
    if c.device is not None:
        d = c.device
        top |= {"device_brand": d.brand, "device_carrier": d.carrier, "device_model": d.model,
                "device_type": d.type, "os_version": d.os_version, "language": d.language,
                "wifi": d.wifi}  # fmt: skip
    body |= {k: v for k, v in top.items() if v is not None}
    custom: dict[str, Any] = {}
    amount, currency = _value(c, route)
    if amount is not None:
        custom |= {"currency": currency, "value": _decimal(amount)}
    if c.order_id or c.event_id:
        custom["order_id"] = c.order_id or c.event_id
    if c.content_ids:
        custom["content_ids"] = list(c.content_ids)
    if c.num_items is not None:
        custom["num_items"] = c.num_items
    if c.contents:
        custom["contents"] = [_item(i) for i in c.contents]
    if custom:
        body["custom_data"] = custom
    return body


def _item(item: Item) -> dict[str, Any]:
    fields = {"id": item.id, "item_name": item.name, "quantity": item.quantity,
              "item_price": None if item.price is None else _decimal(item.price),
              "item_category": item.category, "item_brand": item.brand}  # fmt: skip
    return {k: v for k, v in fields.items() if v is not None}


def _decimal(value: Decimal) -> str:
    """A value as the platforms write a number: digits and a dot, never `1E+2`."""
    try:
        return str(decimal_text(value))
    except ValueError as exc:  # a route's fixed value (a conversion's own is checked)
        raise Skip(f"value {value}: {exc}") from None


def _value(c: Conversion, route: Route) -> tuple[Decimal | None, str | None]:
    """The event's value and currency, else the route's fixed ones."""
    if c.value is not None:
        return c.value, c.currency
    return route.value, route.currency


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
    if c.event_id and column != "PurchaseId":
        body["event_id"] = c.event_id  # not sent: two identical rows stay two conversions
    value, currency = _value(c, route)
    if value is not None:
        body |= {"Price": _decimal(value), "Currency": currency}
    return body


def _vnative(c: Conversion, route: Route, dest: Destination) -> dict[str, Any]:
    if not c.vnative_click_id:
        raise Skip("needs vnative_click_id")
    body: dict[str, Any] = {"click_id": c.vnative_click_id, "conversion_time": c.seconds}
    if c.event_id:
        body["event_id"] = c.event_id  # not sent: it tells this conversion from the click's others
    subs = {f"sub{i}": getattr(route, f"sub{i}") for i in range(1, 11)} | (c.subs or {})
    body |= {k: v for k, v in subs.items() if v is not None}
    return body


BUILDERS: dict[str, Callable[[Conversion, Route, Destination], dict[str, Any]]] = {
    "linkedin": _linkedin,
    "pinterest": _pinterest,
    "yandex": _yandex,
    "vnative": _vnative,
}


def _no_rules(destination: str, name: str) -> str | None:
    return None


def fan_out(
    conversion: Conversion,
    settings: Settings,
    validate: Callable[[dict[str, Any], str], PlatformEvent],
    rule_urn: Callable[[str, str], str | None] = _no_rules,
) -> tuple[list[tuple[str, PlatformEvent]], list[tuple[str, str]]]:
    """The platform events a conversion becomes, and the destinations skipped with why.
    `rule_urn(destination, name)` resolves routes naming a LinkedIn rule by name."""
    events: list[tuple[str, PlatformEvent]] = []
    skipped: list[tuple[str, str]] = []
    routes = [r for r in settings.routes if r.event == conversion.event]
    if not routes:
        skipped.append(("*", f"no route takes event {masked(conversion.event)!r}"))
    per_destination = Counter(r.destination for r in routes)
    seen: Counter[str] = Counter()
    for route in routes:
        seen[route.destination] += 1
        dest = settings.destination(route.destination)
        if not dest.enabled or dest.draining:
            skipped.append((route.destination, "disabled" if not dest.enabled else "draining"))
            continue
        try:
            if route.conversion is None and route.rule is not None:
                urn = rule_urn(route.destination, route.rule)
                if urn is None:
                    raise Skip(
                        f"LinkedIn rule {route.rule!r} is not known yet: run "
                        f"`convdispatch linkedin ensure {route.destination}` (or `rules`)"
                    )
                route = route.model_copy(update={"conversion": urn})
            body = BUILDERS[dest.platform](conversion, route, dest)
            unnamed = model_for(dest.platform).event_id_field is None  # Yandex, vNative
            if unnamed and "event_id" in body and per_destination[route.destination] > 1:
                # Two routes into one destination of a platform without event ids: two
                # events, each with an id of its own (the same on a retry of the call).
                body["event_id"] = f"{body['event_id']}#{seen[route.destination]}"
            events.append((route.destination, validate(body, route.destination)))
        except Skip as reason:
            skipped.append((route.destination, str(reason)))
        except InvalidEventError as exc:
            skipped.append((route.destination, "; ".join(str(e) for e in exc.errors)))
    return events, skipped
