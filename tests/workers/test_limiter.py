"""The shared limiter's scripts against a real Redis (no sleeping: waits are returned)."""

from __future__ import annotations

import time

import redis

from workers.limiter import InFlight, Limit, Limiter


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait(redis_client: redis.Redis) -> None:
    # Given 60 calls/min with a burst of 2
    limiter = Limiter(redis_client, [Limit("p", "token:x", 60, burst=2)])
    # When three calls ask at once
    waits = [limiter.acquire() for _ in range(3)]
    # Then two go and the third must wait about one second
    assert waits[:2] == [0.0, 0.0]
    assert 0.9 <= waits[2] <= 1.0


def test_buckets_are_shared_by_every_limiter_on_the_same_scope(redis_client: redis.Redis) -> None:
    one = Limiter(redis_client, [Limit("p", "token:x", 60)])
    other = Limiter(
        redis.Redis(connection_pool=redis_client.connection_pool), [Limit("p", "token:x", 60)]
    )
    assert one.acquire() == 0.0
    assert other.acquire() > 0.0


def test_a_call_takes_from_every_bucket_or_from_none(redis_client: redis.Redis) -> None:
    # Given a roomy per-second bucket and an exhausted daily one
    roomy, tight = Limit("p", "ip", 6000, burst=5), Limit("p", "user:u", 1, burst=1)
    assert Limiter(redis_client, [tight]).acquire() == 0.0
    both = Limiter(redis_client, [roomy, tight])
    # When a call needs both, it must wait, and the roomy bucket keeps its tokens
    assert both.acquire() > 0.0
    assert [Limiter(redis_client, [roomy]).acquire() for _ in range(5)] == [0.0] * 5


def test_a_block_stops_the_scope_until_its_time(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client, [Limit("p", "token:x", 6000, burst=10)])
    seconds, micros = redis_client.time()
    limiter.block_until(seconds * 1000 + micros // 1000 + 5000)
    assert 4.5 <= limiter.acquire() <= 5.0


def test_blocking_one_scope_kind_leaves_the_others(redis_client: redis.Redis) -> None:
    limiter = Limiter(redis_client, [Limit("p", "user:u", 6000, 10), Limit("p", "ip", 6000, 10)])
    limiter.block_until(int(time.time() * 1000) + 60_000, ["user"])
    assert Limiter(redis_client, [Limit("p", "ip", 6000, 10)]).acquire() == 0.0
    assert Limiter(redis_client, [Limit("p", "user:u", 6000, 10)]).acquire() > 50


def test_in_flight_caps_concurrent_calls(redis_client: redis.Redis) -> None:
    slots = InFlight(redis_client, "p", "user:u", limit=2, hold_ms=60_000)
    assert slots.acquire("a")
    assert slots.acquire("b")
    assert not slots.acquire("c")
    slots.release("a")
    assert slots.acquire("c")
