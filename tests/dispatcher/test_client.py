"""The producer API against a real Redis: validation, hashing, atomicity, backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from dispatcher import (
    BackpressureError,
    ConfigurationError,
    Conversion,
    Destination,
    Dispatcher,
    InvalidEventError,
    LinkedInConversionEvent,
    Settings,
    keys,
)
from dispatcher.compact import expand
from dispatcher.settings import LinkedInSettings

NOW_MS = int(time.time() * 1000)


def event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversion": "urn:lla:llaPartnerConversion:123",
        "conversionHappenedAt": NOW_MS - 60_000,
        "conversionValue": {"currencyCode": "USD", "amount": "50.0"},
        "user": {"userIds": [{"idType": "SHA256_EMAIL", "idValue": f"Buyer{i}@Example.com"}]},
    }
    body.update(overrides)
    return body


def stored(client: redis.Redis, destination: str = "li-main") -> list[dict[str, Any]]:
    return [json.loads(expand(f[b"p"])) for _, f in client.xrange(keys.stream(destination))]


def test_enqueue_stores_the_hashed_event_and_returns_a_receipt(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a LinkedIn event with a raw email
    # When it is enqueued
    receipt = dispatcher.enqueue(event(), "li-main")
    # Then Redis holds the hashed email, never the raw one, under the receipt's event id
    (entry,) = stored(redis_client)
    digest = hashlib.sha256(b"buyer0@example.com").hexdigest()
    assert entry["user"]["userIds"][0]["idValue"] == digest
    assert b"Example.com" not in b"".join(
        redis_client.xrange(keys.stream("li-main"))[0][1].values()
    )
    assert entry["eventId"] == receipt.event_id
    assert receipt.destination == "li-main"


def test_event_id_is_deterministic_so_producer_retries_deduplicate(
    dispatcher: Dispatcher,
) -> None:
    first = dispatcher.enqueue(event(), "li-main")
    second = dispatcher.enqueue(event(), "li-main")
    other = dispatcher.enqueue(event(1), "li-main")
    assert first.event_id == second.event_id != other.event_id


def test_a_caller_event_id_is_kept(dispatcher: Dispatcher, redis_client: redis.Redis) -> None:
    receipt = dispatcher.enqueue(event(eventId="order-42"), "li-main")
    assert receipt.event_id == "order-42"
    assert stored(redis_client)[0]["eventId"] == "order-42"


def test_a_model_instance_is_accepted_and_the_destination_inferred(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    model = LinkedInConversionEvent.model_validate(event())
    receipt = dispatcher.enqueue(model)
    assert receipt.destination == "li-main"
    assert len(stored(redis_client)) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"conversion": "urn:li:conversion:1"}, "conversion"),
        ({"conversionHappenedAt": NOW_MS - 91 * 86_400_000}, "conversionHappenedAt"),
        ({"conversionHappenedAt": NOW_MS + 3_600_000}, "conversionHappenedAt"),
        ({"conversionValue": {"currencyCode": "USD"}}, "conversionValue.amount"),
        ({"user": {"userIds": []}}, "user"),
        ({"user": {"userIds": [{"idType": "SHA256_EMAIL", "idValue": "nope"}]}}, "user.userIds.0"),
        ({"user": {"userIds": [{"idType": "PHONE", "idValue": "1"}]}}, "user.userIds.0.idType"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_input_names_the_field_and_writes_nothing(
    dispatcher: Dispatcher, redis_client: redis.Redis, overrides: dict[str, Any], field: str
) -> None:
    # Given an event that breaks one of LinkedIn's rules
    # When it is enqueued
    with pytest.raises(InvalidEventError) as caught:
        dispatcher.enqueue(event(**overrides), "li-main")
    # Then the error names the field, and Redis holds nothing at all
    assert any(f.startswith(field) for f in caught.value.fields), caught.value.fields
    assert field in str(caught.value)
    assert redis_client.dbsize() == 0


def test_bulk_with_one_invalid_event_raises_listing_it_and_writes_nothing(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    events = [event(i) for i in range(10)]
    events[7] = event(7, conversion="bad")
    with pytest.raises(InvalidEventError) as caught:
        dispatcher.enqueue_many(events, "li-main")
    assert [(e.index, e.field) for e in caught.value.errors] == [(7, "conversion")]
    assert redis_client.dbsize() == 0


def test_bulk_skip_mode_stores_the_valid_and_reports_the_invalid(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    events = [event(i) for i in range(5)]
    events[2] = event(2, conversion="bad")
    result = dispatcher.enqueue_many(events, "li-main", on_invalid="skip")
    assert len(result.receipts) == 4
    assert [e.index for e in result.rejected] == [2]
    assert len(stored(redis_client)) == 4


def test_user_info_names_need_an_explicit_opt_in(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    user = {"userIds": [], "userInfo": {"firstName": "Mike", "lastName": "Smith"}}
    with pytest.raises(InvalidEventError, match="allow_plain_user_info"):
        dispatcher.enqueue(event(user=user), "li-main")
    assert redis_client.dbsize() == 0


def test_backpressure_refuses_the_whole_call_when_the_cap_would_be_passed(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a destination whose backlog cap is 5 and which already holds 4
    capped = settings.model_copy(
        update={"linkedin": LinkedInSettings(base_url="http://127.0.0.1:9", max_backlog=5)}
    )
    d = Dispatcher(capped)
    d.enqueue_many([event(i) for i in range(4)], "li-main")
    # When 2 more arrive
    with pytest.raises(BackpressureError, match="li-main"):
        d.enqueue_many([event(i) for i in range(4, 6)], "li-main")
    # Then none of them was written
    assert len(stored(redis_client)) == 4


def test_a_full_batch_is_due_now_and_a_partial_one_when_its_oldest_waited_max_wait(
    settings: Settings, redis_client: redis.Redis
) -> None:
    small = settings.model_copy(
        update={
            "linkedin": LinkedInSettings(base_url="http://127.0.0.1:9", batch_size=3, max_wait_s=60)
        }
    )
    d = Dispatcher(small)
    # Given one event: due when it has waited max_wait_s
    d.enqueue(event(0), "li-main")
    first_id = redis_client.xrange(keys.stream("li-main"))[0][0]
    first_ms = int(first_id.split(b"-")[0])
    assert redis_client.zscore(keys.due("linkedin"), "li-main") == first_ms + 60_000
    # When two more make a full batch, then it is due now (not later than Redis's clock)
    d.enqueue_many([event(1), event(2)], "li-main")
    seconds, micros = redis_client.time()
    assert redis_client.zscore(keys.due("linkedin"), "li-main") <= seconds * 1000 + micros / 1000
    # And the producer sent nothing to any broker queue: it writes to Redis only
    assert not redis_client.exists("convdispatch.linkedin")


def test_a_leased_or_paused_destination_keeps_its_due_time(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a drain holds the lease (its release will write the due time)
    redis_client.set(keys.lease("li-main"), "holder")
    dispatcher.enqueue(event(0), "li-main")
    assert redis_client.zscore(keys.due("linkedin"), "li-main") is None
    # And a paused destination stays out of the index until resumed
    redis_client.delete(keys.lease("li-main"))
    redis_client.hset(keys.state("li-main"), "paused", 1)
    dispatcher.enqueue(event(1), "li-main")
    assert redis_client.zscore(keys.due("linkedin"), "li-main") is None


def test_the_async_twins_store_the_same_way(settings: Settings, redis_client: redis.Redis) -> None:
    async def main() -> None:
        d = Dispatcher(settings)
        one = await d.aenqueue(event(0), "li-main")
        many = await d.aenqueue_many([event(1), event(2)], "li-main")
        await d.aclose()
        assert one.destination == "li-main"
        assert len(many.receipts) == 2

    asyncio.run(main())
    assert len(stored(redis_client)) == 3


def test_unknown_destination_is_a_configuration_error(dispatcher: Dispatcher) -> None:
    from dispatcher import ConfigurationError

    with pytest.raises(ConfigurationError, match="li-main"):
        dispatcher.enqueue(event(), "nowhere")


def test_a_dict_without_destination_goes_to_the_one_destination_configured(
    settings: Settings, redis_client: redis.Redis
) -> None:
    with Dispatcher(settings) as one:
        receipt = one.enqueue(event())
    assert receipt.destination == "li-main"
    assert redis_client.xlen(keys.stream("li-main")) == 1
    two = {**settings.destinations, "li-2": Destination(platform="linkedin", token="t2")}
    with (
        Dispatcher(settings.model_copy(update={"destinations": two})) as both,
        pytest.raises(ConfigurationError, match="2 destinations are configured and a dict"),
    ):
        both.enqueue(event())


def test_tokens_never_show_in_settings_repr(settings: Settings) -> None:
    assert "token-main" not in repr(settings)
    assert "token-main" not in str(settings.destinations["li-main"])
    assert isinstance(settings.destinations["li-main"], Destination)


def test_enqueue_refuses_past_the_memory_watermark_and_writes_nothing(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given Redis is past 90 % of its maxmemory
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", int(used / 0.95))
    try:
        # When an event is enqueued, then it is refused before Redis would refuse it
        with pytest.raises(BackpressureError, match="maxmemory"):
            dispatcher.enqueue(event(), "li-main")
        assert stored(redis_client) == []
    finally:
        redis_client.config_set("maxmemory", 0)


@pytest.mark.parametrize(
    ("call", "error", "field"),
    [
        (lambda d: d.enqueue({"click_id": "x"}, destination=["li-main"]), ConfigurationError, ""),
        (lambda d: d.enqueue_many(None, "li-main"), InvalidEventError, "events"),
        (lambda d: d.enqueue_many(5, "li-main"), InvalidEventError, "events"),
        (lambda d: d.enqueue_many(True, "li-main"), InvalidEventError, "events"),
        (lambda d: d.enqueue_many(object(), "li-main"), InvalidEventError, "events"),
        (
            lambda d: d.enqueue_many([event()], "li-main", on_invalid="Raise"),
            ConfigurationError,
            "",
        ),
        (lambda d: d.enqueue_many([event()], "li-main", on_invalid=None), ConfigurationError, ""),
        (
            lambda d: d.enqueue(event(conversionHappenedAt=float("inf")), "li-main"),
            InvalidEventError,
            "conversionHappenedAt",
        ),
    ],
)
def test_wrong_arguments_raise_the_documented_errors_and_write_nothing(
    dispatcher: Dispatcher,
    redis_client: redis.Redis,
    call: Any,
    error: type[Exception],
    field: str,
) -> None:
    before = digest(redis_client)
    with pytest.raises(error) as caught:
        call(dispatcher)
    if field:
        assert field in caught.value.fields  # type: ignore[attr-defined]
    assert digest(redis_client) == before


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"happened_at": float("inf")}, "happened_at"),
        ({"happened_at": float("-inf")}, "happened_at"),
        ({"happened_at": 1e20}, "happened_at"),
        ({"happened_at": 10**30}, "happened_at"),
        ({"happened_at": 10**400}, "happened_at"),
        ({"event": 5}, "event"),
        ({"value": 1}, "currency"),
        ({"emial": "a@b.com"}, "emial"),
    ],
)
def test_a_bad_conversion_raises_invalid_event_error_naming_the_field(
    fields: dict[str, Any], bad: str
) -> None:
    from dispatcher import Conversion

    with pytest.raises(InvalidEventError) as caught:
        Conversion(**({"event": "purchase", "happened_at": time.time()} | fields))
    assert bad in caught.value.fields


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), float("nan"), float("inf"), 1e16],
    ids=["1e400", "-1e400", "nan", "inf", "1e16"],
)
def test_a_vnative_conversion_time_out_of_range_names_its_field(value: float) -> None:
    from dispatcher.events.vnative import VNativeConversion

    with pytest.raises(InvalidEventError) as caught:
        VNativeConversion(click_id="c", conversion_time=value)
    assert caught.value.fields == ["conversion_time"]


def digest(client: redis.Redis) -> bytes:
    """Redis's digest of the whole dataset: equal digests, byte-for-byte equal data."""
    return bytes(client.execute_command("DEBUG", "DIGEST"))  # type: ignore[no-untyped-call]


def test_writes_go_on_after_redis_forgot_its_scripts(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a producer whose scripts Redis knows (they run by SHA-1, the text sent once)
    ids = [dispatcher.enqueue(event(1), "li-main").event_id]
    # When Redis forgets them (as after a restart) and the producer writes again, alone
    # and in a pipelined bulk call
    redis_client.script_flush()
    ids.append(dispatcher.enqueue(event(2), "li-main").event_id)
    redis_client.script_flush()
    bulk = dispatcher.enqueue_many([event(i) for i in range(3, 8)], "li-main")
    ids += [r.event_id for r in bulk.receipts]
    # Then every write was stored, once
    assert [e["eventId"] for e in stored(redis_client)] == ids
    assert len(set(ids)) == 7


def test_a_cluster_url_may_list_several_nodes() -> None:
    from dispatcher.storage import _seeds

    assert _seeds("redis://:pw@h1:7000,h2:7001/0") == [
        "redis://:pw@h1:7000/0",
        "redis://:pw@h2:7001/0",
    ]
    assert _seeds("rediss://u:p@a:1,b:2") == ["rediss://u:p@a:1", "rediss://u:p@b:2"]
    assert _seeds("redis://localhost:6379/0") == ["redis://localhost:6379/0"]


def test_a_conversion_among_bulk_items_is_refused_pointing_to_enqueue_conversions(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    conversion = Conversion(event="purchase", happened_at=datetime.now(UTC))
    items: list[Any] = [event(), conversion]  # what a caller's loose typing may pass
    with pytest.raises(InvalidEventError, match="enqueue_conversions") as caught:
        dispatcher.enqueue_many(items, "li-main")
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, "event")]
    skipped = dispatcher.enqueue_many(items, "li-main", on_invalid="skip")
    assert [e.index for e in skipped.rejected] == [1]
    assert redis_client.xlen(keys.stream("li-main")) == 1
    # and so it is without destination=, where two destinations leave none to infer
    two = {"li-main": dispatcher.settings.destinations["li-main"],
           "vn": Destination(platform="vnative", token="k")}  # fmt: skip
    other = Dispatcher(dispatcher.settings.model_copy(update={"destinations": two}))
    with other, pytest.raises(InvalidEventError, match="enqueue_conversions") as caught:
        other.enqueue_many(items[1:])
    assert [(e.index, e.field) for e in caught.value.errors] == [(0, "event")]


def test_enqueue_holds_events_to_the_configured_acceptance_window(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given windows set wider (vNative, Pinterest: no documented limit) and narrower
    # (LinkedIn: 10 days inside its documented 90) than the defaults
    day_s = 86_400.0
    configured = Settings(
        redis_url=settings.redis_url,
        vnative={"acceptance_window_s": 90 * day_s},
        pinterest={"acceptance_window_s": 30 * day_s},
        linkedin={"acceptance_window_s": 10 * day_s},
        destinations={
            "vn": Destination(platform="vnative", token="t1"),
            "pin": Destination(platform="pinterest", token="t2", ad_account_id="549755885175"),
            "li": Destination(platform="linkedin", token="t3"),
        },
    )
    now_s = time.time()
    pin = {"event_name": "checkout", "action_source": "web", "event_id": "p1",
           "user_data": {"em": ["a@b.example"]}}  # fmt: skip
    with Dispatcher(configured) as producer:
        # When events older than the defaults but inside the configured windows come
        producer.enqueue({"click_id": "c", "conversion_time": now_s - 45 * day_s}, "vn")
        producer.enqueue({**pin, "event_time": int(now_s - 20 * day_s)}, "pin")
        assert redis_client.xlen(keys.stream("vn")) == redis_client.xlen(keys.stream("pin")) == 1
        # Then they are taken; and one at or past a configured window is refused naming
        # the field and the setting, with nothing written
        at_edge = {"click_id": "c", "conversion_time": now_s - 90 * day_s}
        twenty_days = event(conversionHappenedAt=int((now_s - 20 * day_s) * 1000))
        for item, dest, field, setting in [
            (at_edge, "vn", "conversion_time", r"90-day vnative\.acceptance_window_s"),
            ({**pin, "event_time": int(now_s - 31 * day_s)}, "pin", "event_time", "pinterest"),
            (twenty_days, "li", "conversionHappenedAt", r"10-day linkedin\.acceptance_window_s"),
        ]:
            with pytest.raises(InvalidEventError, match=setting) as caught:
                producer.enqueue(item, dest)
            assert caught.value.fields == [field]
        assert redis_client.xlen(keys.stream("li")) == 0
        assert redis_client.xlen(keys.stream("vn")) == redis_client.xlen(keys.stream("pin")) == 1
