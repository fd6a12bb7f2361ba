"""The Pinterest event model: the official contract, Pinterest's hashing rules, enqueue."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import redis

from dispatcher import Destination, Dispatcher, InvalidEventError, Settings, keys
from dispatcher.compact import expand
from dispatcher.events.pinterest import ActionSource, EventName, PinterestConversionEvent
from sandboxes.pinterest import check_event, contract_errors, listed

NOW_S = int(time.time())
DIGEST = hashlib.sha256(b"already hashed").hexdigest()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": NOW_S - 60,
        "user_data": {"em": "Buyer@Example.com"},
    }
    return body | overrides


def with_user(**user_data: Any) -> PinterestConversionEvent:
    """A model whose user_data is `user_data` plus an IP/agent pair (so it is identifiable)."""
    pair = {"client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0"}
    return PinterestConversionEvent.model_validate(event(user_data=pair | user_data))


def error_locs(caught: pytest.ExceptionInfo[InvalidEventError]) -> list[str]:
    return caught.value.fields


@pytest.mark.parametrize(
    ("field", "raw", "normalised"),
    [
        ("em", "  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("ph", "+1 (650) 555-0100", "16505550100"),
        ("ph", "0044 20 7946 0958", "442079460958"),  # leading zeros go
        ("ge", "Female", "f"),
        ("ge", " M ", "m"),
        ("ge", "non-binary", "n"),
        ("db", "1990-05-17", "19900517"),
        ("db", "19900517", "19900517"),
        ("db", date(1990, 5, 17), "19900517"),
        ("fn", "  Jane ", "jane"),
        ("ln", "DOE", "doe"),
        ("ct", "San Francisco", "sanfrancisco"),
        ("ct", "St. Louis", "stlouis"),
        ("st", " CA ", "ca"),
        ("zp", "94103-1234", "941031234"),  # the contract: "only digits"
        ("zp", " 75008 ", "75008"),
        ("country", "US", "us"),
        ("external_id", " Loyalty-42 ", "Loyalty-42"),
        (
            "hashed_maids",
            "AEBE52E7-03EE-455A-B3C4-E57283966239",
            "aebe52e7-03ee-455a-b3c4-e57283966239",
        ),
    ],
)
def test_each_hashed_field_is_normalised_as_pinterest_specifies_then_hashed(
    field: str, raw: object, normalised: str
) -> None:
    # Given a raw value for a hashed user_data field
    # When the event is validated
    model = with_user(**{field: raw})
    # Then the field holds the SHA-256 of Pinterest's normal form, as a list
    assert getattr(model.user_data, field) == [sha(normalised)]


def test_a_list_of_values_hashes_each_in_order() -> None:
    model = with_user(em=["A@x.io", "b@Y.io"], ph=["+33 1 23 45 67 89"])
    assert model.user_data.em == [sha("a@x.io"), sha("b@y.io")]
    assert model.user_data.ph == [sha("33123456789")]


@pytest.mark.parametrize(
    "field", ["em", "ph", "ge", "db", "fn", "ln", "ct", "st", "zp", "country", "external_id"]
)
def test_an_already_hashed_value_passes_through_unchanged(field: str) -> None:
    model = with_user(**{field: [DIGEST]}, hashed_maids=DIGEST.upper())
    assert getattr(model.user_data, field) == [DIGEST]
    assert model.user_data.hashed_maids == [DIGEST]  # digests are lowercased, not rehashed


def test_fields_pinterest_does_not_hash_are_sent_as_given() -> None:
    model = with_user(click_id="dj0yJnU9b2JD", partner_id="RampID-1")
    user = model.user_data
    assert (user.client_ip_address, user.client_user_agent) == ("203.0.113.9", "Mozilla/5.0")
    assert (user.click_id, user.partner_id) == ("dj0yJnU9b2JD", "RampID-1")


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("em", "not-an-email"),
        ("ph", "12-34"),
        ("ph", "+1 234 567 890 123 456"),
        ("ge", "unknown"),
        ("db", "17/05/1990"),
        ("db", "1990-02-30"),
        ("st", "California"),
        ("country", "USA"),
        ("ct", "..."),
        ("em", []),
        ("em", [42]),
    ],
)
def test_a_value_that_cannot_be_normalised_is_refused_naming_the_field(
    field: str, raw: object
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        with_user(**{field: raw})
    assert f"user_data.{field}" in error_locs(caught)


def test_the_enums_are_exactly_the_contract_lists() -> None:
    assert {e.value for e in EventName} == listed("event_name")
    assert {a.value for a in ActionSource} == listed("action_source")


@pytest.mark.parametrize(("field", "value"), [("event_name", "purchase"), ("action_source", "tv")])
def test_values_outside_the_enums_are_refused(field: str, value: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        PinterestConversionEvent.model_validate(event(**{field: value}))
    assert error_locs(caught) == [field]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"user_data": {"em": "a@b.co", "email": "a@b.co"}}, "user_data.email"),
        ({"custom_data": {"revenue": "1"}}, "custom_data.revenue"),
        ({"custom_data": {"contents": [{"sku": "x"}]}}, "custom_data.contents.0.sku"),
        ({"device_info": {"ram": 4}}, "device_info.ram"),
    ],
)
def test_unknown_fields_are_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        PinterestConversionEvent.model_validate(event(**overrides))
    assert field in error_locs(caught)


@pytest.mark.parametrize(
    "user_data",
    [{}, {"client_ip_address": "203.0.113.9"}, {"client_user_agent": "UA"}, {"ph": "+16505550100"}],
)
def test_user_data_needs_em_or_hashed_maids_or_the_ip_and_agent_pair(user_data: Any) -> None:
    with pytest.raises(InvalidEventError) as caught:
        PinterestConversionEvent.model_validate(event(user_data=user_data))
    assert error_locs(caught) == ["user_data"]
    assert "client_ip_address and client_user_agent" in str(caught.value)


@pytest.mark.parametrize(
    "user_data",
    [
        {"em": "a@b.co"},
        {"hashed_maids": "AEBE52E7-03EE-455A-B3C4-E57283966239"},
        {"client_ip_address": "2001:db8::1", "client_user_agent": "Mozilla/5.0"},
    ],
)
def test_any_one_identifier_of_the_contract_is_enough(user_data: Any) -> None:
    PinterestConversionEvent.model_validate(event(user_data=user_data))


@pytest.mark.parametrize(
    ("event_time", "why"),
    [
        (NOW_S + 3600, "future"),
        (NOW_S * 1000, "milliseconds"),
        (datetime(2024, 1, 1, 12, 0), "timezone-aware"),  # naive
        (True, "boolean"),
        ("1700000000", "integer"),
    ],
)
def test_event_time_must_be_unix_seconds_not_in_the_future(event_time: object, why: str) -> None:
    with pytest.raises(InvalidEventError, match=why) as caught:
        PinterestConversionEvent.model_validate(event(event_time=event_time))
    assert error_locs(caught) == ["event_time"]


def test_event_time_takes_an_aware_datetime_as_unix_seconds() -> None:
    at = datetime.now(UTC) - timedelta(days=6, hours=23)
    model = PinterestConversionEvent.model_validate(event(event_time=at))
    assert model.event_time == int(at.timestamp())
    assert model.happened_at_ms() == model.event_time * 1000


def test_without_an_event_id_one_is_derived_from_the_content_and_sent() -> None:
    # Given the same event twice and a different one, none with an event_id
    first, again = (PinterestConversionEvent.model_validate(event()) for _ in range(2))
    other = PinterestConversionEvent.model_validate(event(event_name="lead"))
    # When they become payloads
    (id1, body1), (id2, _), (id3, _) = first.to_payload(), again.to_payload(), other.to_payload()
    # Then the ids are deterministic per content, and the payload carries Pinterest's event_id
    assert id1 == id2 != id3
    assert json.loads(body1)["event_id"] == id1


def test_a_caller_event_id_is_kept_and_an_empty_one_refused() -> None:
    event_id, body = PinterestConversionEvent.model_validate(event(event_id="o-1")).to_payload()
    assert event_id == "o-1"
    assert json.loads(body)["event_id"] == "o-1"
    with pytest.raises(InvalidEventError):
        PinterestConversionEvent.model_validate(event(event_id=""))


USER = {"em": ["Jane@Example.com"], "ph": "+1 650 555 0100", "ge": "f", "db": "1990-05-17"}
USER |= {"fn": "Jane", "ln": "Doe", "ct": "Menlo Park", "st": "CA", "zp": "94025", "country": "US"}
USER |= {"external_id": "u-1", "hashed_maids": "AEBE52E7-03EE", "click_id": "epik-1"}
USER |= {"client_ip_address": "203.0.113.9", "client_user_agent": "UA/1", "partner_id": "ramp-1"}
CUSTOM = {"currency": "USD", "value": "72.39", "content_ids": ["sku-1"], "num_items": 2}
CUSTOM |= {"order_id": "order-1001", "predicted_ltv": 100, "opt_out_type": "LDP"}
CUSTOM["contents"] = [{"id": "sku-1", "item_price": "36.2", "quantity": 2, "item_name": "Shirt"}]
RICH = event(user_data=USER, custom_data=CUSTOM, event_id="order-1001", opt_out=False, wifi=True)
RICH |= {
    "event_source_url": "https://shop.example/",
    "partner_name": "ss-example",
    "language": "en",
}
RICH["app_info"] = {"app_name": "Shop", "install_time": NOW_S - 86_400, "window_width": 1280}
RICH["device_info"] = {"form_factor": "cellphone", "network_type": "wifi", "languages": ["en"]}


@pytest.fixture
def pin(redis_url: str, redis_client: redis.Redis) -> Iterator[Dispatcher]:
    destination = Destination(platform="pinterest", token="t", ad_account_id="549755885175")
    dispatcher = Dispatcher(Settings(redis_url=redis_url, destinations={"pin": destination}))
    yield dispatcher
    dispatcher.close()


@pytest.mark.parametrize("body", [event(), RICH], ids=["minimal", "every-field"])
def test_the_stored_payload_validates_against_the_official_contract(
    pin: Dispatcher, redis_client: redis.Redis, body: dict[str, Any]
) -> None:
    # Given an event enqueued for a Pinterest destination
    receipt = pin.enqueue(body, "pin")
    # When the stored payload is read back from Redis
    entries: Any = redis_client.xrange(keys.stream("pin"))
    ((_, fields),) = entries
    stored = json.loads(expand(fields[b"p"]))
    # Then it is valid under Pinterest's contract and rules, hashed, and names its event_id
    assert contract_errors({"data": [stored]}) == []
    assert check_event(stored, time.time())[0] is None
    assert stored["event_id"] == receipt.event_id
    assert b"Example.com" not in fields[b"p"]


def test_an_invalid_event_is_refused_at_enqueue_and_nothing_is_written(
    pin: Dispatcher, redis_client: redis.Redis
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        pin.enqueue(event(user_data={"em": "a@b.co", "email": "a@b.co"}), "pin")
    assert caught.value.fields == ["user_data.email"]
    assert redis_client.dbsize() == 0


def test_a_postal_code_with_letters_is_refused_as_the_contract_takes_digits_only() -> None:
    with pytest.raises(InvalidEventError) as caught:
        with_user(zp=["SW1A 1AA"])
    assert caught.value.fields == ["user_data.zp"]


def test_a_phone_with_a_trunk_zero_is_hashed_as_e164_digits() -> None:
    model = with_user(ph="0044 (0)20 7946 0958")
    assert model.user_data is not None
    assert model.user_data.ph == [sha("442079460958")]


@pytest.mark.parametrize(
    ("custom", "field"),
    [
        ({"num_items": 2**70}, "custom_data.num_items"),
        ({"contents": [{"quantity": -(2**70)}]}, "custom_data.contents.0.quantity"),
        ({"value": "1", "currency": "USD", "num_items": 2**63}, "custom_data.num_items"),
    ],
)
def test_integers_outside_int64_are_refused(custom: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        PinterestConversionEvent.model_validate(event(custom_data=custom))
    assert error_locs(caught) == [field]


def test_only_the_birth_date_takes_a_date_object() -> None:
    with pytest.raises(InvalidEventError) as caught:
        with_user(ph=[datetime.now(UTC)])
    assert error_locs(caught) == ["user_data.ph"]
    assert with_user(db=[date(1990, 5, 17)]).user_data is not None


def test_json_input_is_refused_with_the_documented_error() -> None:
    with pytest.raises(InvalidEventError):
        PinterestConversionEvent.model_validate_json('{"event_time": 1e400}')
    with pytest.raises(InvalidEventError):
        PinterestConversionEvent.model_validate_json("{")
