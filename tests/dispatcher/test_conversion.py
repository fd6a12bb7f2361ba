"""One platform-neutral Conversion fanned out to every routed destination."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis

from dispatcher import Conversion, Destination, Dispatcher, Settings, keys
from dispatcher.settings import LinkedInSettings, Route

DESTINATIONS = {
    "li": Destination(platform="linkedin", token="t-li"),
    "pin": Destination(platform="pinterest", token="t-pin", ad_account_id="549755885175"),
    "ym": Destination(platform="yandex", token="t-ym", counter_id="12345"),
    "vn": Destination(platform="vnative", token="t-vn", send_postback=True),
}
ROUTES = [
    Route(event="purchase", destination="li", conversion="urn:lla:llaPartnerConversion:104004"),
    Route(event="purchase", destination="pin"),
    Route(event="purchase", destination="ym", target="paid"),
    Route(event="purchase", destination="vn", sub1="shop"),
    Route(event="lead", destination="li", conversion="urn:lla:llaPartnerConversion:7"),
]


@pytest.fixture
def fan(redis_url: str, redis_client: redis.Redis) -> Dispatcher:
    settings = Settings(
        redis_url=redis_url,
        linkedin=LinkedInSettings(base_url="http://127.0.0.1:9"),
        destinations=DESTINATIONS,
        routes=ROUTES,
    )
    return Dispatcher(settings)


def purchase(**overrides: object) -> Conversion:
    fields: dict[str, object] = {
        "event": "purchase",
        "happened_at": datetime.now(UTC) - timedelta(minutes=5),
        "value": Decimal("49.90"),
        "currency": "EUR",
        "event_id": "order-1001",
        "email": "Jane.Doe@Example.com",
        "li_fat_id": "li-fat-1",
        "epik": "epik-1",
        "yandex_client_id": "157000000.1",
        "vnative_click_id": "5aae975a9b155cccddccefbe",
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
    }
    return Conversion.model_validate(fields | overrides)


def stored(client: redis.Redis, destination: str) -> list[dict[str, object]]:
    return [json.loads(f[b"p"]) for _, f in client.xrange(keys.stream(destination))]


def test_a_purchase_reaches_every_routed_platform_in_its_own_shape(
    fan: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a purchase with identifiers for every platform
    # When it is enqueued once
    result = fan.enqueue_conversion(purchase())
    # Then each destination holds one event in that platform's format, and none was skipped
    assert sorted(r.destination for r in result.receipts) == ["li", "pin", "vn", "ym"]
    assert result.skipped == []
    (li,) = stored(redis_client, "li")
    assert li["conversion"] == "urn:lla:llaPartnerConversion:104004"
    assert li["eventId"] == "order-1001"
    (pin,) = stored(redis_client, "pin")
    assert pin["event_name"] == "checkout"
    assert pin["user_data"]["client_ip_address"] == "203.0.113.9"
    (ym,) = stored(redis_client, "ym")
    assert ym["ClientId"] == "157000000.1"
    assert ym["Target"] == "paid"
    (vn,) = stored(redis_client, "vn")
    assert vn["click_id"] == "5aae975a9b155cccddccefbe"
    assert vn["sub1"] == "shop"
    raw = [bytes(f[b"p"]) for _, f in redis_client.xrange(keys.stream("pin"))]
    assert not any(b"Jane.Doe" in payload for payload in raw)


def test_destinations_lacking_identifiers_are_skipped_with_the_reason(
    fan: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a purchase with only an email
    conversion = purchase(li_fat_id=None, epik=None, yandex_client_id=None, vnative_click_id=None,
                          ip=None, user_agent=None)  # fmt: skip
    # When it is enqueued
    result = fan.enqueue_conversion(conversion)
    # Then LinkedIn and Pinterest take it; Yandex and vNative are skipped, saying why
    assert sorted(r.destination for r in result.receipts) == ["li", "pin"]
    reasons = dict(result.skipped)
    assert "yandex_client_id" in reasons["ym"]
    assert "vnative_click_id" in reasons["vn"]
    assert redis_client.xlen(keys.stream("ym")) == 0


def test_a_platform_rule_skips_only_that_platform(fan: Dispatcher) -> None:
    # Given a purchase 30 days old: inside LinkedIn's 90 days, outside Pinterest's window
    result = fan.enqueue_conversion(purchase(happened_at=datetime.now(UTC) - timedelta(days=30)))
    destinations = {r.destination for r in result.receipts}
    assert "li" in destinations
    assert "pin" not in destinations
    assert "pin" in dict(result.skipped)


def test_an_unrouted_event_is_reported(fan: Dispatcher) -> None:
    result = fan.enqueue_conversion(purchase(event="page_view"))
    assert result.receipts == []
    assert "page_view" in result.skipped[0][1]


def test_value_needs_a_currency() -> None:
    with pytest.raises(ValueError, match="currency"):
        purchase(currency=None)


def test_a_destination_at_its_cap_is_skipped_and_the_others_get_their_events(
    fan: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given the vNative destination already holds as many events as its cap allows
    capped = fan.settings.model_copy(
        update={"vnative": fan.settings.vnative.model_copy(update={"max_backlog": 1})}
    )
    producer = Dispatcher(capped)
    producer.enqueue({"click_id": "first"}, "vn")
    # When a purchase fans out
    receipt = producer.enqueue_conversion(purchase())
    # Then the healthy destinations got theirs, and vNative is skipped saying why
    assert sorted(r.destination for r in receipt.receipts) == ["li", "pin", "ym"]
    ((name, reason),) = receipt.skipped
    assert name == "vn"
    assert reason.startswith("backpressure")
    assert len(stored(redis_client, "vn")) == 1
    assert len(stored(redis_client, "li")) == 1
