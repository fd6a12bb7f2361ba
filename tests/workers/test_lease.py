"""The drain lease (lease.lua) on a real Redis: what taking it reads, and its fencing."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from dispatcher import Dispatcher, Settings, keys
from tests.pipeline.events import linkedin
from workers.lease import Lease
from workers.limiter import Limit, Limiter

LIMITS = [Limit("linkedin", "token:x", 60, burst=2), Limit("linkedin", "account:1", 6000, 5)]


def lease(settings: Settings, client: redis.Redis) -> Lease:
    return Lease(client, settings, "li-main", "linkedin")


def test_taking_the_lease_reads_the_limiter_as_its_peek_does(
    settings: Settings, redis_client: redis.Redis
) -> None:
    limiter = Limiter(redis_client, LIMITS)
    table = settings.platform("linkedin")
    # Given a fresh bucket, then one emptied by two calls, then an account blocked for 30 s
    waits = []
    for step in ("fresh", "empty", "blocked"):
        if step == "empty":
            assert limiter.acquire() == 0.0
            assert limiter.acquire() == 0.0
        if step == "blocked":
            seconds, micros = redis_client.time()
            limiter.block_until(seconds * 1000 + micros // 1000 + 30_000, ["account"])
        held = lease(settings, redis_client)
        start = held.start(table, LIMITS, read=False)
        assert start is not None
        held.release(table)
        waits.append((start.limiter_wait_s, limiter.peek()))
    # Then both readings agree every time (to the ms a call apart)
    for mine, peek in waits:
        assert abs(mine - peek) <= 0.01
    assert waits[0][0] == 0.0
    assert 0.9 <= waits[1][0] <= 1.0
    assert 29.9 <= waits[2][0] <= 30.0


def test_the_first_batch_is_not_read_while_a_check_must_run_first(
    settings: Settings, redis_client: redis.Redis
) -> None:
    Dispatcher(settings).enqueue(linkedin(1), "li-main")
    table = settings.platform("linkedin").model_copy(update={"max_wait_s": 0})
    state = keys.state("li-main")
    far = int(time.time() * 1000) + 60_000
    cases: dict[str, Callable[[], object]] = {
        "paused": lambda: redis_client.hset(state, "paused", "1"),
        "backing off": lambda: redis_client.hset(state, "next_at_ms", far),
        "unknown outcome": lambda: redis_client.hset(keys.sending("li-main"), "b", "{}"),
    }
    for what, given in cases.items():
        # Given a destination with an event waiting, and one reason not to send yet
        redis_client.delete(state, keys.sending("li-main"))
        given()
        # When a drain takes its lease
        held = lease(settings, redis_client)
        start = held.start(table, [])
        assert start is not None
        held.release(table)
        # Then no read was decided: the engine runs that check first
        assert (what, start.read) == (what, "none")
    assert redis_client.xpending(keys.stream("li-main"), keys.GROUP)["pending"] == 0


def test_a_held_lease_is_refused_and_a_stale_holder_is_fenced(
    settings: Settings, redis_client: redis.Redis
) -> None:
    Dispatcher(settings).enqueue(linkedin(1), "li-main")
    table = settings.platform("linkedin")
    first = lease(settings, redis_client)
    assert first.start(table, []) is not None
    # When another drain tries while it is held, it is refused and reads nothing
    assert lease(settings, redis_client).start(table, []) is None
    # And when the first holder's lease runs out and another takes it over
    redis_client.delete(keys.lease("li-main"))
    second = lease(settings, redis_client)
    assert second.start(table, []) is not None
    # Then the first can neither renew nor release it, and the second's stays
    assert not first.renew()
    assert first.lost.is_set()
    assert first.release(table) == -1
    assert redis_client.get(keys.lease("li-main")) == second.token.encode()
    assert second.release(table) >= 0


def test_the_drain_duration_is_counted_whoever_holds_the_lease(
    settings: Settings, redis_client: redis.Redis
) -> None:
    table = settings.platform("linkedin")
    # Given a drain whose lease another drain took over, and a drain that kept its own
    first = lease(settings, redis_client)
    assert first.start(table, []) is not None
    redis_client.delete(keys.lease("li-main"))
    second = lease(settings, redis_client)
    assert second.start(table, []) is not None
    # When both release with their durations
    assert first.release(table, drain_s=0.2) == -1
    assert second.release(table, drain_s=3.0) >= 0
    # Then the platform's drain histogram counts both
    histogram = redis_client.hgetall(keys.drain_latency("linkedin"))
    assert (histogram[b"le:0.25"], histogram[b"le:5"]) == (b"1", b"1")
    assert float(histogram[b"sum"]) == 3.2


def test_one_heartbeat_keeps_every_lease_of_the_process(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given five destinations' leases of 0.3 s held at once by one process
    short = settings.model_copy(update={"lease_s": 0.3})
    table = short.platform("linkedin")
    held = [Lease(redis_client, short, f"li-{i}", "linkedin") for i in range(5)]
    for one in held:
        assert one.start(table, [], read=False) is not None
    # When a second passes (three lease lengths)
    time.sleep(1.0)
    # Then each is still held by its holder, and once released none is renewed any more
    assert [redis_client.get(keys.lease(one.name)) for one in held] == [
        one.token.encode() for one in held
    ]
    assert not any(one.lost.is_set() for one in held)
    for one in held:
        one.release(table)
    time.sleep(0.3)
    assert not any(redis_client.exists(keys.lease(one.name)) for one in held)


def test_a_lease_that_ran_out_untaken_is_resumed_by_its_holder(
    settings: Settings, redis_client: redis.Redis
) -> None:
    table = settings.platform("linkedin")
    held = lease(settings, redis_client)
    assert held.start(table, []) is not None
    # When its lease runs out (a process kept from the CPU) and no drain takes it meanwhile
    redis_client.delete(keys.lease("li-main"))
    # Then its next renewal takes it back, and the destination is due when that one ends
    assert held.renew()
    assert not held.lost.is_set()
    assert redis_client.get(keys.lease("li-main")) == held.token.encode()
    assert held.release(table) >= 0
    # And once released it cannot be resumed
    assert not held.renew()
    assert redis_client.get(keys.lease("li-main")) is None


def test_a_holder_past_its_grant_asks_redis_before_sending_and_stops_if_taken_over(
    settings: Settings, redis_client: redis.Redis
) -> None:
    table = settings.platform("linkedin")
    first, second = lease(settings, redis_client), lease(settings, redis_client)
    assert first.start(table, []) is not None
    # Within its grant it may send, whatever Redis holds (it asks nothing)
    redis_client.delete(keys.lease("li-main"))
    assert first.held()
    assert not first.lost.is_set()
    # When its grant has run out (its heartbeat kept from the CPU) and another drain took
    # the lease over meanwhile
    assert second.start(table, []) is not None
    first.valid_until = time.monotonic() - 1
    # Then it may send nothing more, and knows its lease is lost
    assert not first.held()
    assert first.lost.is_set()
    # While the holder past its grant, but not taken over, goes on (its grant renewed)
    second.valid_until = time.monotonic() - 1
    assert second.held()
    assert second.valid_until > time.monotonic()
    assert second.release(table) >= 0
