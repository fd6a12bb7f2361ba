"""The Yandex offline-conversion model: every rule applied at enqueue, errors naming fields."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis

from dispatcher import Destination, Dispatcher, InvalidEventError, Settings, keys
from dispatcher.compact import expand
from dispatcher.events import model_for
from dispatcher.events.yandex import EVENT, YandexOfflineConversion
from dispatcher.settings import YandexSettings
from dispatcher.validation import decimal_text

NOW_S = int(time.time())


def event(**changes: Any) -> dict[str, Any]:
    """A valid row for a CLIENT_ID counter, an hour old; `None` removes a column."""
    row = {"ClientId": "157000000.1", "Target": "paid", "DateTime": NOW_S - 3600} | changes
    return {k: v for k, v in row.items() if v is not None}


def bad_fields(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidEventError) as caught:
        EVENT.model_validate(raw)
    return caught.value.fields


@pytest.fixture
def ym(redis_url: str, redis_client: redis.Redis) -> Dispatcher:
    """A producer with a CLIENT_ID counter and a USER_ID counter."""
    settings = Settings(
        redis_url=redis_url,
        yandex=YandexSettings(base_url="http://127.0.0.1:9"),
        destinations={
            "ym-client": Destination(platform="yandex", token="t", counter_id="1"),
            "ym-user": Destination(
                platform="yandex", token="t", counter_id="2", client_id_type="USER_ID"
            ),
        },
    )
    return Dispatcher(settings)


def test_the_model_is_found_by_convention() -> None:
    assert model_for("yandex") is YandexOfflineConversion
    assert EVENT.platform == "yandex"
    assert EVENT.event_id_field is None


def test_the_payload_is_exactly_the_csv_columns_and_nothing_is_hashed() -> None:
    # Given a row with every column, the price as a Decimal and the time as a datetime
    at = datetime.now(UTC) - timedelta(hours=2)
    model = EVENT.model_validate(
        event(DateTime=at, Price=Decimal("49.90"), Currency="EUR", Target="order_confirmed")
    )
    # When it becomes a stored payload
    event_id, payload = model.to_payload()
    # Then the payload holds the CSV column names only, values as Yandex takes them
    assert json.loads(payload) == {
        "ClientId": "157000000.1",
        "Target": "order_confirmed",
        "DateTime": int(at.timestamp()),
        "Price": "49.90",
        "Currency": "EUR",
    }
    # And the derived id identifies the event without being sent
    assert len(event_id) == 32
    assert event_id not in payload.decode()
    assert model.happened_at_ms() == int(at.timestamp()) * 1000


def test_the_same_row_twice_gets_the_same_id() -> None:
    first = EVENT.model_validate(event()).to_payload()
    assert EVENT.model_validate(event()).to_payload() == first


@pytest.mark.parametrize("column", ["ClientId", "UserId", "Yclid", "PurchaseId"])
def test_any_one_identifier_column_is_a_valid_row(column: str) -> None:
    model = EVENT.model_validate(event(**{"ClientId": None} | {column: "42"}))
    assert model.id_column() == column
    assert json.loads(model.to_payload()[1])[column] == "42"


def test_two_identifier_columns_name_the_second() -> None:
    assert bad_fields(event(UserId="u1")) == ["UserId"]


def test_no_identifier_column_names_all_four() -> None:
    assert bad_fields(event(ClientId=None)) == ["ClientId/UserId/Yclid/PurchaseId"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"Target": None}, "Target"),
        ({"Target": ""}, "Target"),
        ({"Target": "   "}, "Target"),
        ({"Target": "paid,extra"}, "Target"),
        ({"Target": "line\nbreak"}, "Target"),
        ({"ClientId": "1,2"}, "ClientId"),
        ({"DateTime": NOW_S + 3600}, "DateTime"),
        ({"DateTime": NOW_S - 22 * 86_400}, "DateTime"),
        ({"DateTime": "yesterday"}, "DateTime"),
        ({"DateTime": datetime.now() - timedelta(hours=1)}, "DateTime"),  # naive
        ({"Price": "49,90"}, "Price"),
        ({"Price": "-5"}, "Price"),
        ({"Price": "1e3"}, "Price"),
        ({"Currency": "eur"}, "Currency"),
        ({"Currency": "EURO"}, "Currency"),
        ({"Revenue": "5"}, "Revenue"),
    ],
)
def test_each_rule_names_its_field(changes: dict[str, Any], field: str) -> None:
    assert bad_fields(event(**changes)) == [field]


def test_a_row_of_the_past_21_days_is_accepted() -> None:
    assert (
        EVENT.model_validate(event(DateTime=NOW_S - 20 * 86_400)).date_time == NOW_S - 20 * 86_400
    )


def test_numbers_as_prices_become_dot_decimals() -> None:
    assert EVENT.model_validate(event(Price=12)).price == "12"
    assert EVENT.model_validate(event(Price=12.5)).price == "12.5"


def test_policy_requires_the_counter_s_identifier_column(ym: Dispatcher) -> None:
    user_counter = ym.settings.destination("ym-user")
    model = EVENT.model_validate(event())
    ((field, message),) = model.policy_errors(user_counter)
    assert field == "ClientId"
    assert "USER_ID" in message
    assert "UserId" in message
    assert model.policy_errors(ym.settings.destination("ym-client")) == []


def test_enqueue_stores_a_valid_row(ym: Dispatcher, redis_client: redis.Redis) -> None:
    receipt = ym.enqueue(event(), "ym-client")
    entries = redis_client.xrange(keys.stream("ym-client"))
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"e"].decode() == receipt.event_id
    assert json.loads(expand(fields[b"p"]))["ClientId"] == "157000000.1"


def test_a_row_with_the_wrong_identifier_is_refused_naming_it(
    ym: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a USER_ID counter and a row identified by ClientId
    # When it is enqueued
    with pytest.raises(InvalidEventError) as caught:
        ym.enqueue(event(), "ym-user")
    # Then the error names ClientId, and nothing was written
    assert caught.value.fields == ["ClientId"]
    assert redis_client.xlen(keys.stream("ym-user")) == 0


def test_one_invalid_row_writes_nothing(ym: Dispatcher, redis_client: redis.Redis) -> None:
    # Given two good rows and one whose DateTime is in the future
    rows = [event(), event(Target="lead"), event(DateTime=NOW_S + 3600)]
    # When they are enqueued together
    with pytest.raises(InvalidEventError) as caught:
        ym.enqueue_many(rows, "ym-client")
    # Then the error names row 2's DateTime and none of the three was stored
    assert [(e.index, e.field) for e in caught.value.errors] == [(2, "DateTime")]
    assert redis_client.xlen(keys.stream("ym-client")) == 0


@pytest.mark.parametrize("price", [Decimal("1e999999999"), Decimal("1e-40"), Decimal("NaN")])
def test_a_price_no_amount_can_be_is_refused_without_formatting_it(price: Decimal) -> None:
    assert bad_fields(event(Price=price, Currency="RUB")) == ["Price"]


def test_a_price_in_exponent_form_is_written_in_digits() -> None:
    row = EVENT.model_validate(event(Price=Decimal("1E+2"), Currency="RUB"))
    assert json.loads(row.to_payload()[1])["Price"] == "100"


@pytest.mark.parametrize("price", ["1" + "0" * 40, "0." + "0" * 39 + "1"])
def test_a_price_written_as_digits_is_bounded_like_a_number(price: str) -> None:
    assert bad_fields(event(Price=price, Currency="RUB")) == ["Price"]


def test_a_boolean_is_no_date_time() -> None:
    assert bad_fields(event(DateTime=True)) == ["DateTime"]


@pytest.mark.parametrize("text", ["1e40", "1E-40", " 1e+31 "])
def test_a_short_amount_with_an_exponent_is_bounded_like_a_number(text: str) -> None:
    # Short strings without an exponent are kept as written without parsing them; these
    # are short too, so they must not take that shortcut.
    with pytest.raises(ValueError, match="amount"):
        decimal_text(text)


def test_an_amount_string_is_kept_as_written() -> None:
    assert decimal_text("0049.90") == "0049.90"
    assert decimal_text("9" * 30) == "9" * 30
