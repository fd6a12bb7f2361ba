"""The vNative event model, alone and through the producer against a real Redis."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis

from dispatcher import Destination, Dispatcher, InvalidEventError, Settings, keys
from dispatcher.compact import expand
from dispatcher.events import model_for
from dispatcher.events.vnative import EVENT, VNativeConversion
from dispatcher.personal_names import dimension_key

EMAIL_SHA256 = hashlib.sha256(b"ada@example.com").hexdigest()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def conversion(**changes: Any) -> dict[str, Any]:
    """The seed's sample conversion."""
    body: dict[str, Any] = {
        "click_id": "5aae975a9b155cccddccefbe",
        "sub1": "vNative Test Import Using API",
        "custom_dimensions": {"first_name": "Testing", "last_name": "Last Name"},
    }
    return body | changes


def errors(body: dict[str, Any]) -> dict[str, str]:
    """Field path -> message of every validation error."""
    with pytest.raises(InvalidEventError) as caught:
        VNativeConversion.model_validate(body)
    return {e.field: e.message for e in caught.value.errors}


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis) -> Iterator[Dispatcher]:
    settings = Settings(
        redis_url=redis_url,
        destinations={"vn-main": Destination(platform="vnative", token="vn-key")},
    )
    d = Dispatcher(settings)
    yield d
    d.close()


def test_the_module_exposes_the_model_by_convention() -> None:
    assert model_for("vnative") is EVENT is VNativeConversion
    assert EVENT.platform == "vnative"
    assert EVENT.event_id_field is None


def test_the_seeds_conversion_becomes_its_json_element_with_names_hashed() -> None:
    # Given the seed's sample conversion, whose custom dimensions carry names
    event = VNativeConversion.model_validate(conversion())
    # When it is turned into the stored payload
    event_id, payload = event.to_payload()
    # Then it is the seed's element with the names normalised and hashed, and no id field
    assert json.loads(payload) == {
        "click_id": "5aae975a9b155cccddccefbe",
        "sub1": "vNative Test Import Using API",
        "custom_dimensions": {"first_name": sha("testing"), "last_name": sha("last name")},
    }
    # And its event id is derived from its content, so the same conversion gets the same id
    assert event_id == VNativeConversion.model_validate(conversion()).to_payload()[0]
    assert len(event_id) == 32


def test_sub1_to_sub10_are_taken_and_sub11_is_not() -> None:
    subs = {f"sub{i}": f"s{i}" for i in range(1, 11)}
    payload = json.loads(VNativeConversion.model_validate({"click_id": "c"} | subs).to_payload()[1])
    assert payload == {"click_id": "c"} | subs
    assert errors({"click_id": "c", "sub11": "x"}) == {"sub11": "Extra inputs are not permitted"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Field required"),
        ({"click_id": ""}, "at least 1 character"),
        ({"click_id": "   "}, "at least 1 character"),
        ({"click_id": 123}, "valid string"),
        ({"click_id": None}, "valid string"),
    ],
)
def test_click_id_is_a_required_non_empty_string(body: dict[str, Any], message: str) -> None:
    found = errors(body)
    assert list(found) == ["click_id"]
    assert message in found["click_id"]


@pytest.mark.parametrize(
    ("name", "raw", "hashed"),
    [
        ("email", "  Ada@Example.COM ", EMAIL_SHA256),
        ("Email", "ada@example.com", EMAIL_SHA256),
        ("E-Mail", "ada@example.com", EMAIL_SHA256),
        ("email_address", "ada@example.com", EMAIL_SHA256),
        ("phone", "+49 151 1234-5678", sha("4915112345678")),
        ("phoneNumber", "+49 151 12345678", sha("4915112345678")),
        ("mobile", 4915112345678, sha("4915112345678")),
        ("firstName", " Ada ", sha("ada")),
        ("Last Name", "Lovelace", sha("lovelace")),
        ("name", "Ada Lovelace", sha("ada lovelace")),
        ("full_name", "Ada Lovelace", sha("ada lovelace")),
        ("email", EMAIL_SHA256.upper(), EMAIL_SHA256),
    ],
)
def test_personal_custom_dimensions_are_normalised_and_hashed(
    name: str, raw: object, hashed: str
) -> None:
    event = VNativeConversion.model_validate({"click_id": "c", "custom_dimensions": {name: raw}})
    # The caller's dimension name is kept: it is the advertiser's dimension in vNative.
    assert event.custom_dimensions == {name: hashed}


def test_other_custom_dimensions_keep_strings_and_numbers_as_given() -> None:
    dimensions = {"plan": "gold", "items": 3, "basket": 49.9, "coupon": ""}
    event = VNativeConversion.model_validate({"click_id": "c", "custom_dimensions": dimensions})
    assert event.custom_dimensions == dimensions


def test_dimension_names_are_compared_in_one_spelling() -> None:
    assert {dimension_key(n) for n in ("firstName", "First-Name", " first name ")} == {"first_name"}


def test_bad_custom_dimensions_are_named_one_by_one() -> None:
    # Given dimensions that are not strings or numbers
    found = errors(
        conversion(custom_dimensions={"ok": 1, "flag": True, "nested": {"a": 1}, "none": None})
    )
    # Then each bad one is named by its path
    assert found == {
        "custom_dimensions.flag": "Value error, must be a string or a number",
        "custom_dimensions.nested": "Value error, must be a string or a number",
        "custom_dimensions.none": "Value error, must be a string or a number",
    }
    assert (
        "must be a finite number"
        in errors(conversion(custom_dimensions={"x": float("inf")}))["custom_dimensions.x"]
    )
    assert list(errors(conversion(custom_dimensions=["a"]))) == ["custom_dimensions"]


def test_a_dimension_named_for_personal_data_is_hashed_whatever_it_holds() -> None:
    # Given dimensions named for personal data holding something else (an opt-in flag, a
    # short number, a number), and an empty one
    dims = {"email_opt_in": "Yes", "phone": "12", "name": 5, "first_name": " "}
    event = VNativeConversion.model_validate(conversion(custom_dimensions=dims))
    # Then none is refused or kept plain: each is hashed as trimmed lowercase text, and
    # the empty one stays empty (there is nothing to hide)
    assert event.custom_dimensions == {
        "email_opt_in": sha("yes"),
        "phone": sha("12"),
        "name": sha("5"),
        "first_name": "",
    }


def test_an_empty_dimension_name_is_refused() -> None:
    found = errors(conversion(custom_dimensions={"": "x"}))
    assert found == {"custom_dimensions.": "a dimension name must not be empty"}


def test_two_conversions_of_one_click_at_different_times_are_two_events() -> None:
    # Given one click converting twice, with no event id of the caller's
    now_s = int(time.time())
    first = VNativeConversion.model_validate(conversion(conversion_time=now_s - 7200))
    second = VNativeConversion.model_validate(conversion(conversion_time=now_s - 60))
    # Then their derived ids differ (the time is not sent, but tells them apart), and an
    # id of the caller's names the event and is never sent
    assert first.to_payload()[0] != second.to_payload()[0]
    own = VNativeConversion.model_validate(conversion(event_id="order-7"))
    event_id, body = own.to_payload()
    assert event_id == "order-7"
    assert b"order-7" not in body
    with pytest.raises(InvalidEventError) as caught:
        VNativeConversion.model_validate(conversion(event_id="jane@example.com"))
    assert caught.value.fields == ["event_id"]


def test_conversion_time_bounds_the_retry_budget_and_is_never_sent() -> None:
    # Given a conversion an hour old, as an aware datetime and as epoch seconds
    at = datetime.now(UTC) - timedelta(hours=1)
    as_datetime = VNativeConversion.model_validate(conversion(conversion_time=at))
    as_seconds = VNativeConversion.model_validate(conversion(conversion_time=at.timestamp()))
    # Then both report that time in ms, and neither payload carries it
    assert as_datetime.happened_at_ms() == int(at.timestamp() * 1000)
    assert abs(as_seconds.happened_at_ms() - int(at.timestamp() * 1000)) <= 1
    untimed = VNativeConversion.model_validate(conversion())
    assert as_datetime.to_payload()[1] == untimed.to_payload()[1]
    assert b"conversion_time" not in as_seconds.to_payload()[1]


def test_without_conversion_time_the_time_of_validation_is_used() -> None:
    before_ms = int(time.time() * 1000)
    event = VNativeConversion.model_validate(conversion())
    after_ms = int(time.time() * 1000)
    assert before_ms <= event.happened_at_ms() <= after_ms


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (datetime(2024, 1, 1), "timezone-aware"),
        (time.time() * 1000, "in the future (epoch seconds are expected, not milliseconds)"),
        ("2024-01-01T00:00:00Z", "timezone-aware datetime or epoch seconds"),
        (True, "timezone-aware datetime or epoch seconds"),
        (datetime.min.replace(tzinfo=UTC), "greater than or equal to 0"),
    ],
)
def test_bad_conversion_times_are_refused(value: object, message: str) -> None:
    assert message in errors(conversion(conversion_time=value))["conversion_time"]


def test_enqueue_stores_only_hashes_and_the_conversion_time(
    producer: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a conversion with an email dimension and a conversion time
    at_s = int(time.time()) - 600
    body = {"click_id": "c1", "custom_dimensions": {"email": "Ada@Example.com"}}
    # When it is enqueued
    receipt = producer.enqueue(body | {"conversion_time": at_s}, "vn-main")
    # Then Redis holds the hashed email, never the raw one, and the time beside the payload
    [(_, fields)] = cast(list[Any], redis_client.xrange(keys.stream("vn-main")))
    assert json.loads(expand(fields[b"p"])) == {
        "click_id": "c1",
        "custom_dimensions": {"email": EMAIL_SHA256},
    }
    assert b"Ada@Example" not in b"".join(fields.values())
    assert int(fields[b"t"]) == at_s * 1000
    assert fields[b"e"].decode() == receipt.event_id


def test_invalid_input_is_refused_naming_each_field_and_nothing_is_written(
    producer: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given one good conversion and two bad ones
    batch = [
        conversion(),
        conversion(click_id=""),
        conversion(custom_dimensions={"": "nope"}, sub12="x"),
    ]
    # When they are enqueued together
    with pytest.raises(InvalidEventError) as caught:
        producer.enqueue_many(batch, "vn-main")
    # Then every bad field is named with its event's index, and nothing was stored
    assert sorted((e.index, e.field) for e in caught.value.errors) == [
        (1, "click_id"),
        (2, "custom_dimensions."),
        (2, "sub12"),
    ]
    assert redis_client.xlen(keys.stream("vn-main")) == 0


def test_skip_stores_the_valid_ones_and_returns_the_invalid(
    producer: Dispatcher, redis_client: redis.Redis
) -> None:
    result = producer.enqueue_many([conversion(), {"click_id": ""}], "vn-main", on_invalid="skip")
    assert len(result.receipts) == 1
    assert [(e.index, e.field) for e in result.rejected] == [(1, "click_id")]
    assert redis_client.xlen(keys.stream("vn-main")) == 1


def test_a_model_with_a_conversion_time_can_be_enqueued_as_a_model(
    producer: Dispatcher, redis_client: redis.Redis
) -> None:
    # A model is validated again at enqueue: its conversion time must survive that
    at_s = int(time.time()) - 60
    model = VNativeConversion(click_id="k1", conversion_time=at_s)
    producer.enqueue(model, "vn-main")
    again = VNativeConversion.model_validate(model)
    assert again.happened_at_ms() == model.happened_at_ms() == at_s * 1000
    assert redis_client.xlen(keys.stream("vn-main")) == 1


@pytest.mark.parametrize("days", [31, 200, 20_000])
def test_a_conversion_time_older_than_the_window_is_refused_at_enqueue(
    producer: Dispatcher, redis_client: redis.Redis, days: int
) -> None:
    # The worker would dead-letter it at once as expired: refused at enqueue, naming the
    # field; Trackier documents no age limit, so building the model takes it.
    old = time.time() - days * 86_400
    assert VNativeConversion.model_validate({"click_id": "c", "conversion_time": old})
    with pytest.raises(InvalidEventError, match=r"30-day vnative\.acceptance_window_s") as caught:
        producer.enqueue({"click_id": "c", "conversion_time": old}, "vn-main")
    assert caught.value.fields == ["conversion_time"]
    assert redis_client.dbsize() == 0
    producer.enqueue({"click_id": "c", "conversion_time": time.time() - 29 * 86_400}, "vn-main")
    assert redis_client.xlen(keys.stream("vn-main")) == 1
