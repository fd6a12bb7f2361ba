"""Bulk enqueue of any size, idempotent producer retries, and the asyncio twins."""

from __future__ import annotations

import asyncio
import gc
import resource
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from dispatcher import (
    BackpressureError,
    ConfigurationError,
    Destination,
    Dispatcher,
    InvalidEventError,
    PinterestConversionEvent,
    Receipt,
    Receipts,
    Settings,
    StorageError,
    keys,
)
from dispatcher.settings import LinkedInSettings, VNativeSettings
from dispatcher.storage import connect
from dispatcher.writer import CHUNK_EVENTS

NOW_MS = int(time.time() * 1000) - 60_000


def event(i: int) -> dict[str, Any]:
    return {
        "conversion": "urn:lla:llaPartnerConversion:1",
        "conversionHappenedAt": NOW_MS,
        "eventId": f"bulk-{i}",
        "user": {
            "userIds": [{"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": f"u{i}"}]
        },
    }


def backlog(client: redis.Redis) -> int:
    return int(client.xlen(keys.stream("li-main")))


def test_a_retry_after_a_lost_reply_stores_the_event_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a producer whose reply is lost: Redis holds writes past its socket timeout
    producer = Dispatcher(settings)
    producer._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=0.2)
    redis_client.execute_command("CLIENT", "PAUSE", "600", "WRITE")  # type: ignore[no-untyped-call]
    with pytest.raises(StorageError):
        producer.enqueue(event(1), "li-main")
    # When the caller retries, as it must after a StorageError
    producer._redis = None
    again = producer.enqueue(event(1), "li-main")
    # Then the event is stored once (the first call did run), and the receipt is the same
    assert again.event_id == "bulk-1"
    assert backlog(redis_client) == 1
    assert redis_client.zscore(keys.event_ids("li-main"), "bulk-1") is not None


def test_bulk_input_of_several_chunks_from_a_generator_is_stored_in_order(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    n = CHUNK_EVENTS * 2 + 7
    receipt = dispatcher.enqueue_many((event(i) for i in range(n)), "li-main")
    assert len(receipt.receipts) == n
    assert backlog(redis_client) == n
    first, last = (
        redis_client.xrange(keys.stream("li-main"), count=1),
        redis_client.xrevrange(keys.stream("li-main"), count=1),
    )
    assert first[0][1][b"e"] == b"bulk-0"
    assert last[0][1][b"e"] == f"bulk-{n - 1}".encode()


def test_bulk_receipts_are_a_sequence_of_receipts_that_the_collector_need_not_track(
    dispatcher: Dispatcher,
) -> None:
    # Given the input of three chunks, made before the call
    n = CHUNK_EVENTS * 2 + 7
    events = [event(i) for i in range(n)]
    gc.collect()
    tracked = len(gc.get_objects())
    # When it is stored
    receipts = dispatcher.enqueue_many(events, "li-main").receipts
    # Then the receipts read as `Receipt`s in input order, equal to a list of them
    assert len(receipts) == n
    assert receipts[0] == Receipt("bulk-0", "li-main")
    assert receipts[-1].event_id == f"bulk-{n - 1}"
    assert receipts[1:3] == [Receipt("bulk-1", "li-main"), Receipt("bulk-2", "li-main")]
    assert receipts == [Receipt(f"bulk-{i}", "li-main") for i in range(n)]
    assert receipts != [Receipt("bulk-0", "li-main")]
    assert Receipts(receipts) == receipts
    assert repr(Receipts(receipts[:1])) == "[Receipt(event_id='bulk-0', destination='li-main')]"
    # And they hold no object per event for the garbage collector (a NamedTuple each
    # would be 10,007 tracked objects, each scanned by every full collection)
    gc.collect()
    assert len(gc.get_objects()) - tracked < n // 10


def test_an_invalid_event_in_a_later_chunk_leaves_the_earlier_chunks_stored_and_says_so(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    def events() -> Iterator[dict[str, Any]]:
        for i in range(CHUNK_EVENTS + 10):
            yield event(i) if i != CHUNK_EVENTS + 3 else {"conversion": "bad"}

    with pytest.raises(InvalidEventError) as caught:
        dispatcher.enqueue_many(events(), "li-main")
    assert {e.index for e in caught.value.errors} == {CHUNK_EVENTS + 3}
    assert len(caught.value.stored) == CHUNK_EVENTS
    assert backlog(redis_client) == CHUNK_EVENTS


class _CallerError(Exception):
    """The caller's own iterable failing part-way."""


@pytest.mark.parametrize("fault", ["another platform's event", "the caller's iterable"])
def test_a_bulk_call_that_raises_part_way_has_finished_writing_before_it_returns(
    dispatcher: Dispatcher, redis_client: redis.Redis, fault: str
) -> None:
    # Given input whose second chunk stops the call with something other than a bad event
    pinterest = {"event_name": "lead", "action_source": "web", "event_time": 1}

    def events() -> Iterator[Any]:
        yield from (event(i) for i in range(CHUNK_EVENTS))
        if fault == "the caller's iterable":
            raise _CallerError
        yield PinterestConversionEvent.model_construct(**pinterest)

    # When the call raises
    with pytest.raises((_CallerError, ConfigurationError)) as caught:
        dispatcher.enqueue_many(events(), "li-main")
    # Then the first chunk's write had ended by then, and our errors say what it stored
    assert backlog(redis_client) == CHUNK_EVENTS
    if isinstance(caught.value, ConfigurationError):
        assert len(caught.value.stored) == CHUNK_EVENTS
    # And nothing is still being written behind the caller's back: the writer thread
    # (one thread, in order) runs a no-op after whatever it had
    dispatcher._writer_pool().submit(lambda: None).result()
    assert backlog(redis_client) == CHUNK_EVENTS


def test_an_empty_bulk_call_still_checks_its_destination(dispatcher: Dispatcher) -> None:
    with pytest.raises(ConfigurationError, match="nope"):
        dispatcher.enqueue_many([], "nope")


def test_every_bad_conversion_of_a_bulk_call_is_named_with_its_index(
    dispatcher: Dispatcher,
) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from dispatcher import Conversion

    good = Conversion(event="purchase", happened_at=datetime.now(UTC))
    broken = good.model_copy(update={"value": Decimal(-5), "currency": "EUR"})
    with pytest.raises(InvalidEventError) as caught:
        dispatcher.enqueue_conversions([good, "nope", good, broken])  # type: ignore[list-item]
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, "conversion"), (3, "value")]


def test_a_routed_call_refused_for_backpressure_lists_each_receipt_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given two destinations, one with room for 3 events, fed from a generator
    destinations = {
        "li-a": Destination(platform="linkedin", token="a"),
        "vn-b": Destination(platform="vnative", token="b"),
    }
    settings = Settings(
        redis_url=redis_url,
        linkedin=LinkedInSettings(base_url="http://127.0.0.1:9"),
        vnative=VNativeSettings(max_backlog=3),
        destinations=destinations,
    )
    pairs = (
        item for i in range(10) for item in (("li-a", event(i)), ("vn-b", {"click_id": f"c{i}"}))
    )
    # When the call is refused for the full one
    with pytest.raises(BackpressureError) as caught:
        Dispatcher(settings).enqueue_routed(pairs)
    # Then `stored` names every event written, each once
    stored = list(caught.value.stored)
    assert len(stored) == len(set(stored)) == redis_client.xlen(keys.stream("li-a"))


@pytest.mark.parametrize("bad", [None, 5, "text"])
def test_enqueue_conversions_takes_only_an_iterable(dispatcher: Dispatcher, bad: Any) -> None:
    with pytest.raises(InvalidEventError) as caught:
        dispatcher.enqueue_conversions(bad)
    assert caught.value.fields == ["conversions"]


def test_a_rule_name_lookup_with_redis_gone_raises_storage_error(settings: Settings) -> None:
    producer = Dispatcher(settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"}))
    with pytest.raises(StorageError):
        producer._rule_names.urn(producer.redis, "li-main", "My rule")


@pytest.mark.pipeline
@pytest.mark.timeout(400)
def test_a_million_events_from_a_generator_with_bounded_memory_and_no_busy_redis(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given a concurrent client pinging Redis throughout, and Redis logging slow commands
    n, errors = 1_000_000, []
    done = threading.Event()
    redis_client.slowlog_reset()

    def ping() -> None:
        client = connect(dispatcher.settings.redis_url)
        while not done.wait(0.01):
            try:
                client.ping()
            except redis.RedisError as exc:  # BUSY would land here
                errors.append(exc)

    pinger = threading.Thread(target=ping)
    pinger.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        # When a million events are enqueued from a generator
        receipt = dispatcher.enqueue_many((event(i) for i in range(n)), "li-main")
    finally:
        done.set()
        pinger.join()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    # Then all are stored, the producer's memory stayed bounded, and no client saw BUSY
    assert len(receipt.receipts) == n
    assert backlog(redis_client) == n
    # (the million receipts returned take ~150 MB; the events themselves are never all held)
    assert growth < 400 * 1024 * 1024, f"grew {growth / 1e6:.0f} MB"
    assert errors == []
    # (Redis's own clock: no call came near the 5 s after which others get BUSY; a chunk
    # takes ~60 ms, more when this shared machine is busy)
    slowest_us = max((e["duration"] for e in redis_client.slowlog_get(128)), default=0)
    assert slowest_us < 2_500_000, f"a command ran {slowest_us / 1000:.0f} ms inside Redis"


def test_aenqueue_works_across_event_loops_and_threads(
    settings: Settings, redis_client: redis.Redis
) -> None:
    producer = Dispatcher(settings)

    async def one(i: int) -> str:
        receipt = await producer.aenqueue(event(i), "li-main")
        await producer.aclose()
        return receipt.event_id

    # Two asyncio.run calls in a row (a new loop each), then four threads with their own loops
    assert asyncio.run(one(0)) == "bulk-0"
    assert asyncio.run(one(1)) == "bulk-1"
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(asyncio.run(one(10 + i))))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [f"bulk-{10 + i}" for i in range(4)]
    assert backlog(redis_client) == 6


def routed_settings(redis_url: str, n: int) -> Settings:
    return Settings(
        redis_url=redis_url,
        linkedin=LinkedInSettings(base_url="http://127.0.0.1:9"),
        destinations={
            f"li-{k}": Destination(platform="linkedin", token=f"token-{k}") for k in range(n)
        },
    )


class CountingConnection(redis.Connection):
    """A real connection that counts what it sends: one count per round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def test_routed_events_of_many_destinations_are_written_in_one_round_trip_per_chunk(
    redis_url: str, redis_client: redis.Redis
) -> None:
    producer = Dispatcher(routed_settings(redis_url, 201))
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    producer._redis = redis.Redis(connection_pool=pool)
    producer.enqueue_routed([("li-200", event(-1))])  # the registry read, the script loaded
    redis_client.config_resetstat()
    CountingConnection.sends = 0
    items = [(f"li-{i % 200}", event(i)) for i in range(CHUNK_EVENTS + 1_000)]
    receipt = producer.enqueue_routed(items)
    # Every event is stored in its own destination's stream, receipts in input order
    assert [r.destination for r in receipt.receipts] == [d for d, _ in items]
    assert all(int(redis_client.xlen(keys.stream(f"li-{k}"))) == 30 for k in range(200))
    # A script call per destination and chunk, two chunks in two round trips (and one
    # reading of INFO memory), not one round trip per destination
    calls = redis_client.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert calls == 2 * 200
    assert CountingConnection.sends <= 3
    producer.close()


def test_a_routed_item_with_a_bad_destination_is_refused_by_index_and_nothing_written(
    redis_url: str, redis_client: redis.Redis
) -> None:
    producer = Dispatcher(routed_settings(redis_url, 2))
    items: list[Any] = [("li-0", event(0)), ("li-nowhere", event(1)), event(2), ("li-1", event(3))]
    digest = redis_client.execute_command("DEBUG", "DIGEST")  # type: ignore[no-untyped-call]
    with pytest.raises(InvalidEventError) as caught:
        producer.enqueue_routed(items)
    assert [(e.field, e.index) for e in caught.value.errors] == [("destination", 1), ("item", 2)]
    assert "li-nowhere" in caught.value.errors[0].message
    assert redis_client.execute_command("DEBUG", "DIGEST") == digest  # type: ignore[no-untyped-call]
    # In skip mode the good items are stored and the bad ones rejected, by index; an
    # unknown destination is looked up in Redis once a call, not once an item
    redis_client.config_resetstat()
    receipt = producer.enqueue_routed([*items, *[("li-nowhere", event(9))] * 50], on_invalid="skip")
    assert [r.event_id for r in receipt.receipts] == ["bulk-0", "bulk-3"]
    assert [e.index for e in receipt.rejected] == [1, 2, *range(4, 54)]
    version_reads = redis_client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
    assert version_reads <= 2
    with pytest.raises(InvalidEventError):
        producer.enqueue_routed(None)
    # A pair whose destination is no id is told apart from an item that is no pair
    with pytest.raises(InvalidEventError) as caught:
        producer.enqueue_routed(cast(Any, [(5, event(0)), [("li-0", event(1))]]))
    assert [e.message for e in caught.value.errors] == [
        "must be a (destination, event) pair with a destination id (str), not int",
        "must be a (destination, event) pair, not list",
    ]
    producer.close()


def test_aenqueue_routed_stores_each_event_in_its_destination(
    redis_url: str, redis_client: redis.Redis
) -> None:
    producer = Dispatcher(routed_settings(redis_url, 3))

    async def run() -> list[str]:
        receipt = await producer.aenqueue_routed((f"li-{i % 3}", event(i)) for i in range(9))
        await producer.aclose()
        return [r.destination for r in receipt.receipts]

    assert asyncio.run(run()) == [f"li-{i % 3}" for i in range(9)]
    assert [int(redis_client.xlen(keys.stream(f"li-{k}"))) for k in range(3)] == [3, 3, 3]


def test_event_ids_repeated_across_a_chunks_parts_and_calls_are_stored_once(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # Ids repeat inside one script call, across its 1,000-event parts, and in a second call
    first = dispatcher.enqueue_many([event(i % 1_200) for i in range(2_500)], "li-main")
    assert len(first.receipts) == 2_500  # every input gets its receipt, repeats too
    assert backlog(redis_client) == 1_200
    dispatcher.enqueue_many([event(i) for i in range(1_100, 1_300)], "li-main")
    assert backlog(redis_client) == 1_300
    # Each stored id points at its own entry (ms * 4096 + sequence), as the trace reads it
    entries = redis_client.xrange(keys.stream("li-main"))
    index = dict(redis_client.zrange(keys.event_ids("li-main"), 0, -1, withscores=True))
    assert len(index) == 1_300
    for entry_id, fields in entries[::97]:
        ms, seq = (int(x) for x in entry_id.split(b"-"))
        assert index[fields[b"e"]] == ms * 4096 + min(seq, 4095)
