"""The settle script's records of a delivered batch: trace runs and latency histogram."""

from __future__ import annotations

from typing import Any, cast

import redis

from dispatcher import Settings, keys
from workers.settle import Settlement, settle


def _stored(client: redis.Redis, n: int) -> list[str]:
    stream = keys.stream("li-main")
    client.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
    for i in range(n):
        client.xadd(stream, {"p": b"{}", "e": f"ev-{i}", "t": 0}, id=f"1000-{i}")
    client.xadd(stream, {"p": b"{}", "e": "late", "t": 0}, id="2000-0")
    client.xreadgroup(keys.GROUP, "c", {stream: ">"})
    client.set(keys.lease("li-main"), "tok")
    return [f"1000-{i}" for i in range(n)] + ["2000-0"]


def test_acks_in_any_order_give_the_same_runs_and_histogram(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given ten stored entries, of which eight are acknowledged out of stream order
    ids = _stored(redis_client, 9)
    acked = [ids[9], ids[4], ids[0], ids[1], ids[2], ids[6], ids[7], ids[3]]
    # When the batch is settled
    batch = Settlement(acked=acked, failures="reset", retry_counted=False, batch_id="b")
    done = settle(redis_client, settings, "li-main", "linkedin", "tok", "c", batch)
    # Then the trace record holds the runs of consecutive ids, in order
    assert done == (8, 0)
    ((_, record),) = cast(list[Any], redis_client.xrange(keys.deliveries("li-main")))
    assert record[b"r"] == b"1000-0-4 1000-6-7 2000-0-0"
    assert record[b"n"] == b"8"
    # And every acknowledged event is counted once in the latency histogram
    histogram = redis_client.hgetall(keys.delivery_latency("linkedin"))
    assert sum(int(v) for k, v in histogram.items() if k != b"sum") == 8
    assert int(redis_client.hget(keys.state("li-main"), "delivered") or 0) == 8
    # And only the two left out are still in the stream
    left = [e[0].decode() for e in redis_client.xrange(keys.stream("li-main"))]
    assert left == [ids[5], ids[8]]


def test_batches_settled_in_any_order_remove_exactly_their_own_entries(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given 30 stored entries: batch A (the oldest 10) and batch B (the next 10) read and
    # in flight at once, and 10 more never read
    stream = keys.stream("li-main")
    redis_client.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
    ids = [
        cast(bytes, redis_client.xadd(stream, {"p": b"{}", "e": f"ev-{i}", "t": 0}))
        for i in range(30)
    ]
    redis_client.xreadgroup(keys.GROUP, "c", {stream: ">"}, count=20)
    redis_client.set(keys.lease("li-main"), "tok")
    a, b, unread = ids[:10], ids[10:20], ids[20:]

    def settle_(s: Settlement) -> tuple[int, int]:
        return settle(redis_client, settings, "li-main", "linkedin", "tok", "c", s)

    def left() -> list[bytes]:
        return [cast(bytes, e[0]) for e in cast(list[Any], redis_client.xrange(stream))]

    # When B is settled first: 8 delivered, 1 dead-lettered, 1 left for a retry
    delivered_b = [*b[:4], *b[5:9]]
    assert settle_(Settlement(acked=delivered_b, dead=[(b[4], "bad", True)], retry=[b[9]])) == (
        8,
        1,
    )
    # Then A (still pending, older) is untouched, and so are B's retry and the unread ones
    assert left() == [*a, b[9], *unread]
    # When A is settled, all delivered
    redis_client.config_resetstat()
    assert settle_(Settlement(acked=a, failures="reset", retry_counted=False)) == (10, 0)
    # Then nothing older was pending: one trim removed A's entries (no per-entry XDEL)
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_xtrim"]["calls"] == 1
    assert "cmdstat_xdel" not in stats
    # And only B's retry and the unread entries are left, and they are still readable
    assert left() == [b[9], *unread]
    assert redis_client.xpending(stream, keys.GROUP)["pending"] == 1
    fresh = redis_client.xreadgroup(keys.GROUP, "c", {stream: ">"})
    assert [e[0] for e in fresh[0][1]] == unread
    # When the retry is delivered: the oldest pending entry, so its settle trims
    assert settle_(Settlement(acked=[b[9]], retry_counted=False)) == (1, 0)
    assert left() == unread
    assert int(redis_client.hget(keys.state("li-main"), "delivered") or 0) == 19
