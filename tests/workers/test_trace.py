"""`trace`: an event followed through waiting, in flight, delivered and dead (real Redis)."""

from __future__ import annotations

import json
import random

import httpx
import pytest
import redis

from dispatcher import Control, DeadLetters, Dispatcher, Settings, keys
from dispatcher.settings import LinkedInSettings
from tests.pipeline.events import linkedin
from workers.engine import Engine


@pytest.fixture
def fast(settings: Settings) -> Settings:
    table = LinkedInSettings(base_url="http://li.test", max_wait_s=0, rate_per_min=6e6)
    return settings.model_copy(update={"linkedin": table})


def platform(request: httpx.Request) -> httpx.Response:
    """LinkedIn: refuses events whose id starts with "bad", by index, as LinkedIn words it."""
    elements = json.loads(request.content)["elements"]
    bad = [i for i, e in enumerate(elements) if e["eventId"].startswith("bad")]
    if bad:
        message = "".join(f"Index: {i}, ERROR :: /user :: refused\n" for i in bad)
        return httpx.Response(422, json={"message": message, "status": 422})
    return httpx.Response(200, json={"elements": [{"status": 201}] * len(elements)})


def engine(settings: Settings, client: redis.Redis) -> Engine:
    http = httpx.Client(transport=httpx.MockTransport(platform))
    return Engine(settings, client, http, consumer="w1", sleep=lambda _: None, rng=random.Random(1))


def test_an_event_is_followed_from_waiting_through_in_flight_to_delivered(
    fast: Settings, redis_client: redis.Redis
) -> None:
    with Dispatcher(fast) as producer:
        control = Control(producer)
        producer.enqueue_many([linkedin(i, "tr") for i in range(3)], "li-main")
        # Waiting, since it was stored
        (waiting,) = control.trace("tr-1")
        assert (waiting.destination, waiting.state) == ("li-main", "waiting")
        assert "waiting since" in waiting.detail
        # In flight once a drain has taken it
        redis_client.xreadgroup(keys.GROUP, "w9", {keys.stream("li-main"): ">"}, count=10)
        (taken,) = control.trace("tr-1")
        assert (taken.state, taken.facts["consumer"]) == ("in flight", "w9")
        redis_client.xgroup_delconsumer(keys.stream("li-main"), keys.GROUP, "w9")
        redis_client.xgroup_setid(keys.stream("li-main"), keys.GROUP, "0")
        # Delivered: which batch, which answer, when
        report = engine(fast, redis_client).drain("li-main")
        assert report.delivered == 3
        (done,) = control.trace("tr-1")
        assert done.state == "delivered"
        assert (done.facts["status"], done.facts["batch_events"]) == ("200", 3)
        assert done.facts["batch"]
        assert "other_batches" not in done.facts


def test_a_refused_event_is_traced_to_its_dead_letter_and_its_neighbours_to_delivery(
    fast: Settings, redis_client: redis.Redis
) -> None:
    with Dispatcher(fast) as producer:
        producer.enqueue_many([linkedin(0, "ok"), linkedin(1, "bad"), linkedin(2, "ok")], "li-main")
        engine(fast, redis_client).drain("li-main")
        engine(fast, redis_client).drain("li-main")  # the resend of the two good ones
        (dead,) = Control(producer).trace("bad-1")
        assert dead.state == "dead"
        assert "ERROR :: /user :: refused" in dead.facts["reason"]
        assert dead.facts["status"] == "422"
        (good,) = Control(producer).trace("ok-2")
        assert good.state == "delivered"


def test_a_replayed_dead_letter_is_traced_to_its_new_entry(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given an event LinkedIn refused, dead-lettered
    with Dispatcher(fast) as producer:
        producer.enqueue_many([linkedin(1, "bad")], "li-main")
        engine(fast, redis_client).drain("li-main")
        assert Control(producer).trace("bad-1")[0].state == "dead"
        # When an operator replays it
        assert DeadLetters(producer).replay("linkedin") == 1
        # Then the trace finds it waiting in the stream again, not "gone"
        (again,) = Control(producer).trace("bad-1")
        assert (again.destination, again.state) == ("li-main", "waiting")
        assert "(due 20" in again.detail
        # And once made due at once (score 0, as `resume` writes), it says "due now"
        redis_client.zadd(keys.due("linkedin", keys.shard("li-main")), {"li-main": 0})
        (now,) = Control(producer).trace("bad-1")
        assert "(due now," in now.detail
        assert "1970" not in now.detail
        # And a producer's retry of the same event id is still not stored twice
        producer.enqueue_many([linkedin(1, "bad")], "li-main")
        assert redis_client.xlen(keys.stream("li-main")) == 1


def test_an_unknown_event_says_so(fast: Settings, redis_client: redis.Redis) -> None:
    with Dispatcher(fast) as producer:
        (unknown,) = Control(producer).trace("never-stored")
    assert unknown.state == "unknown"
    assert "24 h" in unknown.detail
