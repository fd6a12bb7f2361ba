"""Generated bad input, seeded: every entry point raises only the documented errors, names
the field, and leaves Redis byte-for-byte unchanged (DEBUG DIGEST) when it refuses."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import (
    ConfigurationError,
    Conversion,
    Destination,
    Dispatcher,
    FieldError,
    InvalidEventError,
    Settings,
)
from dispatcher.settings import Route

NOW_S = int(time.time()) - 60
VALID: dict[str, dict[str, Any]] = {
    "li": {
        "conversion": "urn:lla:llaPartnerConversion:1",
        "conversionHappenedAt": NOW_S * 1000,
        "conversionValue": {"currencyCode": "EUR", "amount": "12.5"},
        "user": {"userIds": [{"idType": "SHA256_EMAIL", "idValue": "a@b.example"}]},
    },
    "pin": {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": NOW_S,
        "event_id": "p-1",
        "user_data": {
            "em": ["a@b.example"],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {"currency": "EUR", "value": "12.5", "content_name": "shoes"},
    },
    "ym": {
        "ClientId": "123.456",
        "Target": "paid",
        "DateTime": NOW_S,
        "Price": "1.5",
        "Currency": "EUR",
    },
    "vn": {"click_id": "c-1", "sub1": "x", "custom_dimensions": {"sku": "A-1"}},
}
# Non-ASCII digits, near-currencies, a bidi "email", raw personal data, a huge string.
TRICKY = ["", " ", "\u0661\u0662\u0663", "\uff11\uff12", "EU1", "U$D", "12A"]
TRICKY += ["\u202e@\u202e.\u202e", "jane@example.com", "+44 20 7946 0958", "x" * 5000]
TRICKY += ["urn:lla:llaPartnerConversion:\u0663\u0664", "é" * 15 + "a (555) 123-4567"]
NASTY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**400, -(10**400)]),  # too large for a float
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TRICKY),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*prefix, i))
    return found


def mutated(base: dict[str, Any], path: tuple[Any, ...], value: Any, how: str) -> Any:
    event = copy.deepcopy(base)
    *parent_path, last = path
    parent = event
    for step in parent_path:
        parent = parent[step]
    if how == "delete" and isinstance(parent, dict):
        del parent[last]
    elif how == "extra" and isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    else:
        parent[last] = value
    return event


@pytest.fixture(scope="module")
def producer(redis_url: str) -> Iterator[Dispatcher]:
    destinations = {
        "li": Destination(platform="linkedin", token="t1"),
        "pin": Destination(platform="pinterest", token="t2", ad_account_id="549755885175"),
        "ym": Destination(platform="yandex", token="t3", counter_id="42"),
        "vn": Destination(platform="vnative", token="t4"),
    }
    routes = [Route(event="buy", destination="vn")]
    with Dispatcher(Settings(redis_url=redis_url, destinations=destinations, routes=routes)) as d:
        yield d


def digest(client: redis.Redis) -> bytes:
    return bytes(client.execute_command("DEBUG", "DIGEST"))  # type: ignore[no-untyped-call]


ENTRY_POINTS = ["enqueue", "many", "skip", "routed", "aenqueue"]


def call(producer: Dispatcher, entry: str, event: Any, destination: Any) -> None:
    if entry == "enqueue":
        producer.enqueue(event, destination)
    elif entry == "many":
        producer.enqueue_many([event], destination)
    elif entry == "skip":
        if producer.enqueue_many([event], destination, on_invalid="skip").rejected:
            raise InvalidEventError([FieldError("event", "refused in skip mode")])
    elif entry == "routed":
        producer.enqueue_routed([(destination, event)])
    else:
        asyncio.run(_aenqueue(producer, event, destination))


async def _aenqueue(producer: Dispatcher, event: Any, destination: Any) -> None:
    try:
        await producer.aenqueue(event, destination)
    finally:
        await producer.aclose()


@settings(
    derandomize=True, max_examples=400, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(data=st.data())
def test_generated_bad_events_raise_only_documented_errors_and_write_nothing(
    producer: Dispatcher, redis_client: redis.Redis, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(VALID)))
    base = VALID[name]
    path = data.draw(st.sampled_from(paths(base)))
    how = data.draw(st.sampled_from(["replace", "delete", "extra"]))
    event = mutated(base, path, data.draw(NASTY), how)
    entry = data.draw(st.sampled_from(ENTRY_POINTS))
    redis_client.flushdb()
    before = digest(redis_client)
    refused = refusal(producer, entry, event, name)
    if refused is not None:
        assert digest(redis_client) == before, "a refused call wrote to Redis"
        assert all(e.field for e in refused)
        return
    # Accepted: then nothing raw that the mutation planted is stored
    stored = b"".join(
        bytes(v)
        for key in redis_client.scan_iter("*")
        if redis_client.type(key) == b"stream"
        for _, f in redis_client.xrange(key)
        for v in f.values()
    )
    assert b"jane@example.com" not in stored.lower()
    assert b"+44 20 7946 0958" not in stored


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    field=st.sampled_from(["event", "happened_at", "value", "currency", "email", "phone",
                           "vnative_click_id", "event_id"]),
    value=NASTY,
)  # fmt: skip
def test_generated_bad_conversions_raise_invalid_event_error(field: str, value: Any) -> None:
    fields = {"event": "buy", "happened_at": NOW_S, "vnative_click_id": "c1", field: value}
    errors = construction_errors(fields)
    assert errors is None or all(e.field for e in errors)


def construction_errors(fields: dict[str, Any]) -> list[FieldError] | None:
    """None if a Conversion was built, else the documented error's field errors (any
    other exception fails the test by propagating)."""
    try:
        Conversion(**fields)
    except InvalidEventError as exc:
        return exc.errors
    return None


def refusal(producer: Dispatcher, entry: str, event: Any, name: str) -> list[FieldError] | None:
    """None if the call stored the event, else the errors of the documented refusal."""
    try:
        call(producer, entry, event, name)
    except InvalidEventError as exc:
        return exc.errors
    except ConfigurationError:
        return []
    return None
