"""One platform-neutral Conversion fanned out to every routed destination."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis

from dispatcher import (
    ConfigurationError,
    Conversion,
    Destination,
    Dispatcher,
    InvalidEventError,
    Settings,
    keys,
)
from dispatcher.compact import expand
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
    return [json.loads(expand(f[b"p"])) for _, f in client.xrange(keys.stream(destination))]


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
    raw = [expand(f[b"p"]) for _, f in redis_client.xrange(keys.stream("pin"))]
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


FULL = {
    "external_id": "crm-77",
    "company": "Acme",
    "title": "Buyer",
    "country": "de",
    "first_name": "Jane",
    "last_name": "Doe",
    "order_id": "o-9",
    "content_ids": ["sku-1", "sku-2"],
    "contents": [{"id": "sku-1", "name": "Mug", "price": "9.90", "quantity": 2, "brand": "A"}],
    "num_items": 2,
    "action_source": "app_ios",
    "partner_name": "ss-shopify",
    "advertiser_tracking_enabled": False,
    "app": {"id": "429047995", "name": "Shop", "version": "7.1"},
    "device": {"brand": "Apple", "model": "iPhone15,2", "os_version": "17.1", "wifi": True},
    "subs": {"sub4": "newsletter", "sub10": "x"},
}


@pytest.fixture
def full_fan(redis_url: str, redis_client: redis.Redis) -> Dispatcher:
    dests = DESTINATIONS | {
        "li": Destination(platform="linkedin", token="t-li", allow_plain_user_info=True)
    }
    routes = [
        Route(event="purchase", destination="li", conversion="urn:lla:llaPartnerConversion:1"),
        Route(event="purchase", destination="pin", partner_name="route-partner"),
        Route(event="purchase", destination="ym", target="paid", value="5", currency="RUB"),
        Route(event="purchase", destination="vn", sub1="shop", sub4="route-sub4"),
    ]
    return Dispatcher(Settings(redis_url=redis_url, destinations=dests, routes=routes))


def test_every_conversion_field_reaches_its_platforms_shape(
    full_fan: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a purchase using every field the neutral Conversion has
    result = full_fan.enqueue_conversion(purchase(**FULL))
    assert result.skipped == []
    # Then LinkedIn gets the whole userInfo (country upper-cased) and externalIds
    (li,) = stored(redis_client, "li")
    assert li["user"]["userInfo"] == {
        "firstName": "Jane", "lastName": "Doe", "companyName": "Acme", "title": "Buyer",
        "countryCode": "DE",
    }  # fmt: skip
    assert li["user"]["externalIds"] == ["crm-77"]
    # And Pinterest the app, device, opt-out, partner and product fields (event over route)
    (pin,) = stored(redis_client, "pin")
    assert pin["action_source"] == "app_ios"
    assert pin["opt_out"] is True  # advertiser_tracking_enabled = False
    assert pin["partner_name"] == "ss-shopify"
    assert (pin["app_id"], pin["app_name"], pin["app_version"]) == ("429047995", "Shop", "7.1")
    assert (pin["device_brand"], pin["device_model"], pin["wifi"]) == ("Apple", "iPhone15,2", True)
    assert pin["os_version"] == "17.1"
    custom = pin["custom_data"]
    assert custom["order_id"] == "o-9"
    assert custom["content_ids"] == ["sku-1", "sku-2"]
    assert custom["num_items"] == 2
    assert custom["contents"] == [
        {"id": "sku-1", "item_name": "Mug", "item_price": "9.90", "quantity": 2, "item_brand": "A"}
    ]
    assert len(pin["user_data"]["external_id"][0]) == 64  # hashed, as Pinterest wants
    assert len(pin["user_data"]["country"][0]) == 64
    # And Yandex the event's own Price/Currency over the route's
    (ym,) = stored(redis_client, "ym")
    assert (ym["Price"], ym["Currency"]) == ("49.90", "EUR")
    # And vNative the event's subs over the route's, the route's where the event has none
    (vn,) = stored(redis_client, "vn")
    assert (vn["sub1"], vn["sub4"], vn["sub10"]) == ("shop", "newsletter", "x")


def test_route_defaults_apply_when_the_event_has_none(
    full_fan: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a purchase without value, partner or subs
    full_fan.enqueue_conversion(purchase(value=None, currency=None))
    # Then Yandex gets the route's fixed Price, Pinterest its partner, vNative its sub4
    (ym,) = stored(redis_client, "ym")
    assert (ym["Price"], ym["Currency"]) == ("5", "RUB")
    (pin,) = stored(redis_client, "pin")
    assert pin["partner_name"] == "route-partner"
    assert "opt_out" not in pin
    (vn,) = stored(redis_client, "vn")
    assert vn["sub4"] == "route-sub4"


def test_an_unknown_sub_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="sub11"):
        purchase(subs={"sub11": "x"})


def test_a_route_naming_a_rule_uses_the_urn_ensure_stored(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a route naming its LinkedIn rule by name
    routes = [Route(event="purchase", destination="li", rule="Web purchase")]
    producer = Dispatcher(Settings(redis_url=redis_url, destinations=DESTINATIONS, routes=routes))
    # When the name is not known yet, the destination is skipped saying what to run
    first = producer.enqueue_conversion(purchase(event_id="a"))
    assert "convdispatch linkedin ensure li" in dict(first.skipped)["li"]
    # And once `ensure` has stored it, events carry that rule's URN
    redis_client.hset(keys.rule_names("li"), "Web purchase", "urn:lla:llaPartnerConversion:42")
    producer._rule_names.clear()
    second = producer.enqueue_conversion(purchase(event_id="b"))
    assert second.skipped == []
    (li,) = stored(redis_client, "li")
    assert li["conversion"] == "urn:lla:llaPartnerConversion:42"


def test_start_trial_goes_to_pinterest_as_custom_and_the_raw_name_is_refused(
    fan: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given the peers' `start_trial`, which Pinterest's pinned contract (v5.23.0) does not list
    routes = [Route(event="start_trial", destination="pin")]
    producer = Dispatcher(fan.settings.model_copy(update={"routes": routes}))
    # When it comes as a neutral Conversion, Pinterest gets it as `custom`
    producer.enqueue_conversion(purchase(event="start_trial"))
    (pin,) = stored(redis_client, "pin")
    assert pin["event_name"] == "custom"
    # And in Pinterest's own shape it is refused, naming the field
    own = dict(pin, event_name="start_trial", event_id="raw-1")
    with pytest.raises(InvalidEventError) as refused:
        producer.enqueue(own, "pin")
    assert refused.value.fields == ["event_name"]


def test_a_conversion_changed_with_model_copy_is_validated_again(
    fan: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given conversions made with model_copy(update=...), which pydantic does not validate
    fixed = purchase().model_copy(update={"contents": [{"id": "sku-1", "quantity": 2}]})
    broken = purchase().model_copy(update={"happened_at": None})
    # When they are enqueued
    fan.enqueue_conversion(fixed)
    with pytest.raises(InvalidEventError) as caught:
        fan.enqueue_conversion(broken)
    # Then the valid one is stored as validated, the invalid one refused naming its field
    (pin,) = stored(redis_client, "pin")
    assert pin["custom_data"]["contents"] == [{"id": "sku-1", "quantity": 2}]
    assert caught.value.fields == ["happened_at"]


@pytest.mark.parametrize("value", [Decimal("1E+2"), Decimal("100.00"), 100])
def test_a_value_in_exponent_form_goes_out_as_plain_digits(
    fan: Dispatcher, redis_client: redis.Redis, value: object
) -> None:
    receipt = fan.enqueue_conversion(purchase(value=value))
    assert receipt.skipped == []
    (li,) = stored(redis_client, "li")
    amount = li["conversionValue"]["amount"]
    assert amount in ("100", "100.00")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_items", True),
        ("num_items", 2**70),
        ("opt_out", 1),
        ("opt_out", "yes"),
        ("value", Decimal("1e20")),
    ],
)
def test_bools_are_not_numbers_and_numbers_stay_in_range(field: str, value: object) -> None:
    with pytest.raises(InvalidEventError) as caught:
        purchase(**{field: value})
    assert caught.value.fields == [field]


def test_a_destination_passed_with_a_conversion_is_refused() -> None:
    import dispatcher

    with pytest.raises(dispatcher.ConfigurationError, match="pass no destination"):
        dispatcher.enqueue(purchase(), "li")  # type: ignore[call-overload]


def test_a_conversion_given_to_enqueue_says_to_use_enqueue_conversion(fan: Dispatcher) -> None:
    with pytest.raises(ConfigurationError, match="enqueue_conversion"):
        fan.enqueue(purchase(), "vn")


def test_the_conversions_event_id_keeps_two_conversions_of_one_click_apart(
    fan: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given two conversions of one click and one Yandex visitor, with their own event ids
    fan.enqueue_conversion(purchase(event_id="signup-77", value=Decimal("5")))
    fan.enqueue_conversion(purchase(event_id="order-1001", value=Decimal("5")))
    # Then vNative and Yandex (which have no event id) store both, each under its own id,
    # and neither id is sent
    for destination in ("vn", "ym"):
        entries = redis_client.xrange(keys.stream(destination))
        assert [f[b"e"] for _, f in entries] == [b"signup-77", b"order-1001"]
        assert all(b"signup-77" not in expand(f[b"p"]) for _, f in entries)


def test_two_routes_into_one_yandex_counter_store_two_rows(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given two routes of one event into one Yandex counter (two goals)
    routes = [
        Route(event="purchase", destination="ym", target="paid"),
        Route(event="purchase", destination="ym", target="any_order"),
    ]
    settings = Settings(redis_url=redis_url, destinations=DESTINATIONS, routes=routes)
    # When a conversion with its own event id fans out
    receipt = Dispatcher(settings).enqueue_conversion(purchase(event_id="order-9"))
    # Then each goal gets its row, under ids that differ (and stay the same on a retry)
    assert [r.event_id for r in receipt.receipts] == ["order-9#1", "order-9#2"]
    assert sorted(str(row["Target"]) for row in stored(redis_client, "ym")) == ["any_order", "paid"]


def test_a_decimal_made_from_a_float_is_refused_naming_the_value() -> None:
    with pytest.raises(InvalidEventError) as caught:
        purchase(value=Decimal(49.9))  # noqa: RUF032 (the mistake under test)
    assert caught.value.fields == ["value"]
    assert "Decimal('49.9')" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", "jane doe@example.com"), ("email", "janedoe@example"),
     ("email", "jane\u202e@example.com"), ("email", "x" * 70), ("phone", "+44 20"),
     ("phone", "call me"), ("phone", "+1" + "2" * 20)],
)  # fmt: skip
def test_an_email_or_phone_no_platform_could_match_is_refused_without_echoing_it(
    field: str, value: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        Conversion(event="purchase", happened_at=datetime.now(UTC), **{field: value})
    assert caught.value.fields == [field]
    assert value not in str(caught.value)


def test_a_hashed_email_and_phone_are_taken_as_they_are() -> None:
    digest = "a" * 64
    c = Conversion(event="purchase", happened_at=datetime.now(UTC), email=digest, phone=digest)
    assert (c.email, c.phone) == (digest, digest)
    assert Conversion(event="p", happened_at=datetime.now(UTC), phone="+44 20 7946 0958").phone


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"event_source_url": "https://shop.example/?tel=030/1234567"}, "event_source_url"),
        ({"subs": {"sub2": "(555) 123-4567"}}, "subs.sub2"),
        ({"contents": [{"id": "sku-1", "name": "call 020 7946 0958"}]}, "contents.0.name"),
    ],
)
def test_a_national_phone_in_a_conversions_free_text_refuses_it_at_once(
    overrides: dict[str, object], field: str
) -> None:
    # Given free text of a Conversion holding a national number (no "+")
    # When the Conversion is made, Then it is refused naming the field (no destination
    # quietly skipped, no other destination served with the rest)
    with pytest.raises(InvalidEventError) as caught:
        purchase(**overrides)
    assert caught.value.fields == [field]
