"""The delivery engine on a real Redis with a scripted platform (httpx.MockTransport)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
import redis

from dispatcher import ConfigurationError, DeadLetters, Destination, Dispatcher, Settings, keys
from dispatcher.settings import LinkedInSettings, VNativeSettings, YandexSettings
from tests.conftest import wait_for
from tests.pipeline.events import linkedin
from tests.stored import stored_text
from workers.engine import Engine
from workers.request import SLOT_WAIT_S, NotSent

Handler = Callable[[httpx.Request], httpx.Response]


def engine_for(settings: Settings, client: redis.Redis, handler: Handler) -> Engine:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return Engine(
        settings, client, http, consumer="test", sleep=lambda _: None, rng=random.Random(1)
    )


@pytest.fixture
def fast(settings: Settings) -> Settings:
    table = LinkedInSettings(
        base_url="http://li.test", max_wait_s=0, max_attempts=2, rate_per_min=6e6
    )
    return settings.model_copy(update={"linkedin": table})


def ok(request: httpx.Request) -> httpx.Response:
    n = len(json.loads(request.content)["elements"])
    return httpx.Response(200, json={"elements": [{"status": 201}] * n})


def test_an_event_past_its_acceptance_window_is_dead_lettered_not_sent(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given an event stored 91 days after it happened (an old producer, a long outage)
    body = linkedin(1, "old")
    old_ms = int(time.time() * 1000) - 91 * 86_400_000
    assert not Dispatcher(fast).write({"li-main": [("old-1", json.dumps(body).encode(), old_ms)]})
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return ok(request)

    # When a worker drains
    report = engine_for(fast, redis_client, record).drain("li-main")
    # Then it is dead-lettered as expired and never sent
    assert sent == []
    assert report.dead == 1
    (letter,) = DeadLetters(Dispatcher(fast)).list("linkedin")
    assert letter.reason.startswith("expired")


def test_retries_end_at_max_attempts_with_the_last_error(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given a platform that is down for good and max_attempts = 2
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    engine = engine_for(fast, redis_client, lambda r: httpx.Response(503, json={}))
    # When two drains fail (the backoff cleared between them, as time would)
    first = engine.drain("li-main")
    redis_client.hdel(keys.state("li-main"), "next_at_ms")
    second = engine.drain("li-main")
    # Then the first backs off and the second gives up, dead-lettering with the reason
    assert first.status == "backing-off"
    assert first.retry == 1
    assert second.dead == 1
    (letter,) = DeadLetters(Dispatcher(fast)).list("linkedin")
    assert letter.reason == "gave up after 2 attempts: platform unavailable (503)"
    assert letter.attempts == 2
    assert redis_client.xlen(keys.stream("li-main")) == 0


def test_throttled_elements_of_a_failing_batch_count_no_attempt(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given two events, and LinkedIn answering element 0 with 429 and element 1 with 500
    # three times (max_attempts = 2), then creating both
    Dispatcher(fast).enqueue_many([linkedin(0), linkedin(1)], "li-main")
    answers = [[429, 500]] * 3 + [[201, 201]]

    def mixed(request: httpx.Request) -> httpx.Response:
        statuses = answers.pop(0)
        n = len(json.loads(request.content)["elements"])
        return httpx.Response(200, json={"elements": [{"status": s} for s in statuses[:n]]})

    engine = engine_for(fast, redis_client, mixed)
    # When it drains as each backoff ends (the fourth drain sends event 0 alone)
    reports = []
    for _ in range(4):
        reports.append(engine.drain("li-main"))
        redis_client.hdel(keys.state("li-main"), "next_at_ms")
    # Then the failing element is dead-lettered at max_attempts with its own reason, and
    # the throttled one, never charged an attempt, is delivered
    (letter,) = DeadLetters(Dispatcher(fast)).list("linkedin")
    assert letter.event_id == "ev-1"
    assert letter.reason == "gave up after 2 attempts: element status 500"
    assert [r.delivered for r in reports] == [0, 0, 0, 1]
    assert redis_client.xlen(keys.stream("li-main")) == 0


def test_a_transport_error_names_where_without_credentials_path_or_query(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given a base_url with credentials in it, and a platform that cannot be reached
    table = fast.linkedin.model_copy(update={"base_url": "http://user:secret@li.test:8443"})
    settings = fast.model_copy(update={"linkedin": table})
    Dispatcher(settings).enqueue(linkedin(1), "li-main")

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    # When a drain fails to connect
    engine_for(settings, redis_client, down).drain("li-main")
    # Then the recorded error says where (scheme, host, port) and nothing more
    error = redis_client.hget(keys.state("li-main"), "last_error")
    assert error is not None
    assert b"ConnectError talking to the platform at http://li.test:8443" in error
    assert b"secret" not in error
    assert b"/rest" not in error


@pytest.mark.parametrize("form", ["raw", "percent-encoded", "JSON-escaped"])
def test_a_platform_echoing_the_token_leaves_it_nowhere_in_redis(
    fast: Settings, redis_client: redis.Redis, form: str
) -> None:
    # Given a platform whose error answer quotes the request's token back
    token = "tok/en+Secret-7731"
    settings = fast.model_copy(
        update={"destinations": {"li-main": Destination(platform="linkedin", token=token)}}
    )
    Dispatcher(settings).enqueue(linkedin(1), "li-main")
    echoed = {
        "raw": token,
        "percent-encoded": quote(token, safe=""),
        "JSON-escaped": token.replace("/", "\\/"),  # JSON text tok\/en..., read as tok/en
    }[form]

    def echo(request: httpx.Request) -> httpx.Response:
        said = f'{{"message": "invalid token {echoed}", "status": 400}}'
        return httpx.Response(400, content=said.encode())

    # When a drain reads that answer (a rejection keeps the platform's words)
    engine_for(settings, redis_client, echo).drain("li-main")
    # Then no reason, excerpt or dead letter in Redis holds the token, in any form
    stored = stored_text(redis_client)
    assert "invalid token ***" in DeadLetters(Dispatcher(settings)).list("linkedin")[0].reason
    for shown in (token, quote(token, safe=""), "tok\\/en", "Secret-7731"):
        assert shown not in stored


def test_a_vnative_key_echoed_in_a_refusal_is_not_in_the_pause_reason(
    settings: Settings, redis_client: redis.Redis
) -> None:
    key = "VNkey-qq7731zz"
    dests = {"vn": Destination(platform="vnative", token=key)}
    table = VNativeSettings(base_url="http://vn.test", max_wait_s=0)
    vn = settings.model_copy(update={"destinations": dests, "vnative": table})
    Dispatcher(vn).enqueue({"click_id": "ck-1"}, "vn")

    def refuse(request: httpx.Request) -> httpx.Response:
        said = {
            "success": False,
            "code": 13,
            "message": f"Invalid API key {request.headers['x-api-key']}",
        }
        return httpx.Response(401, json=said)

    assert engine_for(vn, redis_client, refuse).drain("vn").status == "paused"
    reason = redis_client.hget(keys.state("vn"), "pause_reason")
    assert reason == b"invalid API key (code 13): Invalid API key ***"
    assert key not in stored_text(redis_client)


def test_retry_after_as_an_http_date_sets_the_backoff(
    fast: Settings, redis_client: redis.Redis
) -> None:
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    later = time.time() + 120
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    engine = engine_for(
        fast, redis_client, lambda r: httpx.Response(429, headers={"Retry-After": date})
    )
    report = engine.drain("li-main")
    assert 115_000 <= report.not_before_ms - time.time() * 1000 <= 121_000
    assert abs(redis_client.zscore(keys.due("linkedin"), "li-main") / 1000 - later) < 3
    next_at = int(redis_client.hget(keys.state("li-main"), "next_at_ms"))
    assert abs(next_at / 1000 - later) < 3


def test_a_paused_destination_resumes_when_its_token_changes(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given a destination paused by a 401
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    refused = engine_for(
        fast, redis_client, lambda r: httpx.Response(401, json={"serviceErrorCode": 65601})
    )
    assert refused.drain("li-main").status == "paused"
    assert engine_for(fast, redis_client, ok).drain("li-main").status == "paused"
    # When the operator deploys a new token
    rotated = fast.model_copy(
        update={"destinations": {"li-main": Destination(platform="linkedin", token="new-token")}}
    )
    report = engine_for(rotated, redis_client, ok).drain("li-main")
    # Then the next drain delivers without anyone pressing resume
    assert report.delivered == 1
    assert not redis_client.hget(keys.state("li-main"), "paused")


def test_a_second_drain_of_the_same_destination_is_refused_by_the_lease(
    fast: Settings, redis_client: redis.Redis
) -> None:
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    redis_client.set(keys.lease("li-main"), "someone-else")
    assert engine_for(fast, redis_client, ok).drain("li-main").status == "busy"
    assert redis_client.xlen(keys.stream("li-main")) == 1


def test_a_partial_batch_waits_for_max_wait(settings: Settings, redis_client: redis.Redis) -> None:
    patient = settings.model_copy(
        update={"linkedin": LinkedInSettings(base_url="http://li.test", max_wait_s=30)}
    )
    Dispatcher(patient).enqueue(linkedin(1), "li-main")
    report = engine_for(patient, redis_client, ok).drain("li-main")
    assert report.status == "idle"
    assert report.batches == 0
    due_in_ms = redis_client.zscore(keys.due("linkedin"), "li-main") - time.time() * 1000
    assert 28_000 <= due_in_ms <= 30_000


def test_an_adapter_that_raises_is_retried_then_dead_lettered_without_a_hot_loop(
    fast: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an adapter that cannot read the platform's answer
    from workers.adapters.linkedin import LinkedInAdapter

    def broken(self: LinkedInAdapter, response: httpx.Response, n: int) -> None:
        raise KeyError("elements")

    monkeypatch.setattr(LinkedInAdapter, "parse_response", broken)
    Dispatcher(fast).enqueue(linkedin(1), "li-main")
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return ok(request)

    engine = engine_for(fast, redis_client, record)
    # When it drains, then the batch backs off with an attempt counted (no immediate resend)
    first = engine.drain("li-main")
    assert first.status == "backing-off"
    assert engine.drain("li-main").status == "backing-off"  # still waiting: no call made
    assert len(calls) == 1
    # And when the backoff has passed, the second failure ends it with the reason
    redis_client.hdel(keys.state("li-main"), "next_at_ms")
    second = engine.drain("li-main")
    assert second.dead == 1
    assert len(calls) == 2
    (letter,) = DeadLetters(Dispatcher(fast)).list("linkedin")
    assert letter.reason.startswith("gave up after 2 attempts: could not read the answer: KeyError")


def test_a_full_slot_takes_no_rate_token_and_reads_no_batch(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a platform capped at one call in flight, and that slot taken by another worker
    table = LinkedInSettings(
        base_url="http://li.test", max_wait_s=0, max_in_flight=1, rate_per_min=60, burst=5
    )
    capped = settings.model_copy(update={"linkedin": table})
    Dispatcher(capped).enqueue(linkedin(1), "li-main")
    engine = engine_for(capped, redis_client, ok)
    target = engine.target("li-main")
    scope = target.limits[0].scope
    redis_client.zadd(keys.in_flight("linkedin", scope), {"other": time.time() * 1000 + 60_000})
    redis_client.config_resetstat()
    # When it drains ten times
    reports = [engine.drain("li-main") for _ in range(10)]
    # Then it waits a second each time without reading a batch, no token left the bucket
    # and nothing was delivered
    assert {r.status for r in reports} == {"waiting"}
    assert all(r.not_before_ms >= time.time() * 1000 + 500 for r in reports)
    read = ("cmdstat_xreadgroup", "cmdstat_xautoclaim", "cmdstat_xclaim")
    assert not set(read) & set(redis_client.info("commandstats"))
    tokens = redis_client.hget(keys.bucket("linkedin", scope), "tokens")
    assert tokens is None or float(tokens) >= 4.99
    assert redis_client.xlen(keys.stream("li-main")) == 1


def test_calls_of_one_process_count_one_slot_each_against_the_cap(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a platform capped at two calls in flight, and one process making four at once
    table = LinkedInSettings(base_url="http://li.test", max_in_flight=2, rate_per_min=6e6)
    capped = settings.model_copy(update={"linkedin": table})
    inside, release, lock = [0], threading.Event(), threading.Lock()
    peak = [0]

    def slow(request: httpx.Request) -> httpx.Response:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        release.wait(10)
        with lock:
            inside[0] -= 1
        return httpx.Response(200, json={})

    engine = engine_for(capped, redis_client, slow)
    target = engine.target("li-main")
    build = partial(httpx.Request, "POST", "http://li.test/rest/conversionEvents")
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(engine.path.call, target, build, lambda r: r.status_code)]
        wait_for(lambda: inside[0] == 1, 5, "the first call in flight")
        calls += [pool.submit(engine.path.call, target, build, lambda r: r.status_code)]
        wait_for(lambda: inside[0] == 2, 5, "the second call in flight")
        calls += [pool.submit(engine.path.call, target, build, lambda r: r.status_code)]
        calls += [pool.submit(engine.path.call, target, build, lambda r: r.status_code)]
        refused = [calls[2].result(5), calls[3].result(5)]  # answered while two are held
        release.set()
        answered = [calls[0].result(5), calls[1].result(5)]
    # Then the third and fourth found no slot, and at most two were ever in flight
    assert refused == [NotSent(SLOT_WAIT_S)] * 2
    assert answered == [200, 200]
    assert peak[0] == 2
    # And every slot was given back
    assert redis_client.zcard(keys.in_flight("linkedin", target.limits[0].scope)) == 0


def test_a_request_that_cannot_be_built_takes_no_rate_token(
    fast: Settings, redis_client: redis.Redis
) -> None:
    table = fast.linkedin.model_copy(update={"rate_per_min": 60, "burst": 1})
    dests = {"li-main": Destination(platform="linkedin", token_env="CONVDISP_TEST_UNSET_TOKEN")}
    unset = fast.model_copy(update={"linkedin": table, "destinations": dests})
    Dispatcher(unset).enqueue(linkedin(1), "li-main")
    engine = engine_for(unset, redis_client, ok)
    # When a drain cannot build its request (the token's variable is unset)
    assert engine.drain("li-main").status == "paused"
    # Then the one token of the bucket is still there for the call that can be made
    assert engine.path.wait_s(engine.target("li-main")) == 0


def test_workers_settle_and_deliver_on_a_redis_that_is_full(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given 20 events waiting and Redis filled to its maxmemory (noeviction)
    Dispatcher(fast).enqueue_many([linkedin(i) for i in range(20)], "li-main")
    redis_client.config_set("maxmemory-policy", "noeviction")
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", used + 200_000)
    try:
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            fill(redis_client)
        # When a worker drains
        report = engine_for(fast, redis_client, ok).drain("li-main")
        # Then every event is delivered and acknowledged
        assert report.delivered == 20
        assert redis_client.xlen(keys.stream("li-main")) == 0
    finally:
        redis_client.config_set("maxmemory", 0)


def fill(client: redis.Redis) -> None:
    for i in range(10_000):
        client.set(f"{keys.PREFIX}:junk:{i}", "x" * 1000)


def test_one_task_drains_many_destinations_and_names_an_unknown_one(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given three configured destinations with events, and a name no longer configured
    dests = {f"li-{i}": Destination(platform="linkedin", token=f"t{i}") for i in range(3)}
    many_dests = fast.model_copy(update={"destinations": dests})
    for name in dests:
        Dispatcher(many_dests).enqueue_many([linkedin(i) for i in range(3)], name)
    # When one engine drains them all in one go
    reports = engine_for(many_dests, redis_client, ok).drain_many([*dests, "li-gone"])
    # Then each was delivered, and the unknown one is reported, not raised
    assert [getattr(r, "delivered", None) for r in reports[:3]] == [3, 3, 3]
    assert isinstance(reports[3], ConfigurationError)


def test_a_batch_too_large_for_the_platform_is_split_until_it_fits(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given a platform that answers 413 to any call of more than 2 events
    sizes: list[int] = []

    def small_only(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["elements"])
        sizes.append(n)
        return httpx.Response(413) if n > 2 else ok(request)

    Dispatcher(fast).enqueue_many([linkedin(i) for i in range(5)], "li-main")
    # When it drains
    report = engine_for(fast, redis_client, small_only).drain("li-main")
    # Then the batch went in halves until each fitted, and every event was delivered
    assert sizes == [5, 2, 3, 1, 2]
    assert report.delivered == 5
    assert report.dead == 0
    assert redis_client.xlen(keys.stream("li-main")) == 0


class RoundTrips:
    """Counts the Redis round trips made through a client (each takes a pool connection)."""

    def __init__(self, client: redis.Redis) -> None:
        self.count = 0
        pool = client.connection_pool
        take = pool.get_connection

        def counted(*args: object, **kwargs: object) -> object:
            self.count += 1
            return take(*args, **kwargs)

        pool.get_connection = counted  # type: ignore[assignment]


def test_a_small_drain_costs_five_redis_round_trips(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given an engine that has synced its registry and drained once (Redis knows its
    # scripts: a first use sends the script's text too), and 50 new events waiting
    engine = engine_for(fast, redis_client, ok)
    Dispatcher(fast).enqueue_many([linkedin(i) for i in range(5)], "li-main")
    assert engine.drain("li-main").delivered == 5
    Dispatcher(fast).enqueue_many([linkedin(i) for i in range(5, 55)], "li-main")
    trips = RoundTrips(redis_client)
    # When it drains them
    report = engine.drain("li-main")
    # Then: lease, state, limiter and what waits in one call; the read; the rate token;
    # the settle; the release (with the due time and the drain's duration)
    assert report.delivered == 50
    assert trips.count == 5
    assert redis_client.xlen(keys.stream("li-main")) == 0
    assert redis_client.hget(keys.drain_latency("linkedin"), "sum") is not None


def test_a_dead_holders_entries_are_taken_over_and_a_live_holders_are_left(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given two events read by a worker that died a lease ago, and one read a moment ago
    Dispatcher(fast).enqueue_many([linkedin(i) for i in range(3)], "li-main")
    stream = keys.stream("li-main")
    old = cast(list[Any], redis_client.xreadgroup(keys.GROUP, "dead", {stream: ">"}, count=2))
    ids = [e[0] for e in old[0][1]]
    redis_client.xclaim(stream, keys.GROUP, "dead", 0, ids, idle=60_000)
    redis_client.xreadgroup(keys.GROUP, "alive", {stream: ">"}, count=1)
    engine = engine_for(fast, redis_client, ok)
    # When a worker drains, twice
    first, second = engine.drain("li-main"), engine.drain("li-main")
    # Then the dead holder's two are delivered and the live holder's one is left to it: the
    # second drain comes back once that one's lease could have run out
    assert first.delivered == 2
    assert second.status == "idle"
    assert redis_client.xpending(stream, keys.GROUP)["pending"] == 1
    due_in_ms = redis_client.zscore(keys.due("linkedin"), "li-main") - time.time() * 1000
    assert 2_000 <= due_in_ms <= fast.lease_s * 1000


def test_a_drain_longer_than_its_lease_keeps_it_by_the_heartbeat(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given a lease of 0.3 s and a platform that takes 1 s to answer
    short = fast.model_copy(update={"lease_s": 0.3})
    Dispatcher(short).enqueue_many([linkedin(i) for i in range(3)], "li-main")

    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(1.0)
        return ok(request)

    # When it drains
    report = engine_for(short, redis_client, slow).drain("li-main")
    # Then the lease was renewed all along: the batch settled, and the lease is given back
    assert report.status == "sent"
    assert report.delivered == 3
    assert redis_client.get(keys.lease("li-main")) is None


def test_a_backlog_of_full_batches_is_read_after_the_lease_and_sent_in_full(
    fast: Settings, redis_client: redis.Redis
) -> None:
    # Given a batch size of 2 and 5 events waiting (two full batches and a partial one)
    table = fast.linkedin.model_copy(update={"batch_size": 2})
    small = fast.model_copy(update={"linkedin": table})
    Dispatcher(small).enqueue_many([linkedin(i) for i in range(5)], "li-main")
    sizes: list[int] = []

    def record(request: httpx.Request) -> httpx.Response:
        sizes.append(len(json.loads(request.content)["elements"]))
        return ok(request)

    # When a worker drains
    report = engine_for(small, redis_client, record).drain("li-main")
    # Then every event went, two by two and then the last one
    assert sorted(sizes) == [1, 2, 2]
    assert report.delivered == 5
    assert redis_client.xlen(keys.stream("li-main")) == 0


@pytest.mark.parametrize("taken", [False, True])
def test_a_lease_that_runs_out_during_a_call_settles_only_if_nobody_took_it(
    fast: Settings, redis_client: redis.Redis, taken: bool
) -> None:
    # Given a platform call during which the drain's lease runs out, and (or not) another
    # drain takes it
    Dispatcher(fast).enqueue_many([linkedin(i) for i in range(3)], "li-main")

    def lapse(request: httpx.Request) -> httpx.Response:
        redis_client.delete(keys.lease("li-main"))
        if taken:
            redis_client.set(keys.lease("li-main"), "other", px=60_000)
            redis_client.hset(keys.state("li-main"), "lease_holder", "other")
        return ok(request)

    # When the batch settles
    report = engine_for(fast, redis_client, lapse).drain("li-main")
    # Then it settles when nobody had taken the lease; else nothing is settled
    if taken:
        assert report.status == "fenced"
        assert report.delivered == 0
        assert redis_client.xlen(keys.stream("li-main")) == 3
    else:
        assert report.delivered == 3
        assert redis_client.xlen(keys.stream("li-main")) == 0


@pytest.mark.parametrize(("log_format", "level"), [("text", "DEBUG"), ("json", "INFO")])
def test_a_settled_batch_is_logged_at_info_only_for_json_logs(
    fast: Settings,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    log_format: str,
    level: str,
) -> None:
    # Given an event waiting, and workers logging in `log_format`
    chosen = fast.model_copy(update={"log_format": log_format})
    Dispatcher(chosen).enqueue(linkedin(1), "li-main")
    # When it is delivered
    with caplog.at_level("DEBUG", logger="workers.engine"):
        engine_for(chosen, redis_client, ok).drain("li-main")
    # Then its batch's line carries the delivery fields, at DEBUG in text and INFO in JSON
    [record] = [vars(r) for r in caplog.records if hasattr(r, "outcome")]
    assert record["levelname"] == level
    assert (record["destination"], record["events"]) == ("li-main", 1)
    assert record["outcome"] == "delivered"
    assert record["batch"]


def test_rows_of_two_column_sets_go_as_two_uploads_and_a_throttled_first_holds_the_second(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a Yandex counter with a priced and an unpriced row in one batch
    table = YandexSettings(base_url="http://ym.test", max_wait_s=0, lookup_delay_s=0)
    dests = {"ym": Destination(platform="yandex", token="t", counter_id="42")}
    ym = settings.model_copy(update={"yandex": table, "destinations": dests})
    at = int(time.time()) - 60
    Dispatcher(ym).enqueue_many(
        [
            {"ClientId": "1.1", "Target": "paid", "DateTime": at},
            {"ClientId": "1.2", "Target": "paid", "DateTime": at, "Price": "5", "Currency": "EUR"},
        ],
        "ym",
    )
    uploads: list[str] = []

    def throttled(request: httpx.Request) -> httpx.Response:
        uploads.append(request.content.decode(errors="replace"))
        return httpx.Response(429, json={"errors": [{"error_type": "quota_parallel_requests"}]})

    def accepted(request: httpx.Request) -> httpx.Response:
        uploads.append(request.content.decode(errors="replace"))
        n = request.content.count(b"\n1.") or 1
        return httpx.Response(
            200,
            json={
                "uploading": {
                    "id": len(uploads),
                    "status": "PREPARED",
                    "line_quantity": n,
                    "source_quantity": n,
                }
            },
        )

    # When the first upload is throttled
    report = engine_for(ym, redis_client, throttled).drain("ym")
    # Then the second part waits with it (not sent in the same drain), and nothing is lost
    assert len(uploads) == 1
    assert report.status == "backing-off"
    assert redis_client.xlen(keys.stream("ym")) == 2
    # And once the wait is over, they go as two uploads, each header filled in every row
    redis_client.delete(keys.state("ym"), *redis_client.keys("*blocked*"))
    uploads.clear()
    engine_for(ym, redis_client, accepted).drain("ym")
    assert sorted(u.count("Price") for u in uploads) == [0, 1]
    assert all(",," not in u for u in uploads)


class LaggingYandex:
    """Yandex whose listing shows an upload only `lag_s` after it was stored. The POSTs
    numbered in `dropped` time out before it stores them, those in `lost` after."""

    def __init__(
        self, lag_s: float, lost: set[int], dropped: frozenset[int] = frozenset(),
        listing_status: int = 200,
    ) -> None:  # fmt: skip
        self.lag_s, self.lost, self.dropped = lag_s, lost, dropped
        self.listing_status = listing_status
        self.stored: list[tuple[str, float]] = []
        self.posts = 0
        self.listings = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        now = time.time()
        if request.method == "GET":
            self.listings += 1
            if self.listing_status != 200:
                return httpx.Response(self.listing_status, json={"errors": []})
            shown = [
                {"id": i + 1, "comment": c, "status": "PREPARED"}
                for i, (c, at) in enumerate(self.stored)
                if now - at >= self.lag_s
            ]
            return httpx.Response(200, json={"uploadings": shown})
        self.posts += 1
        if self.posts in self.dropped:
            raise httpx.ReadTimeout("lost before it was stored", request=request)
        self.stored.append((request.url.params["comment"], now))
        if self.posts in self.lost:
            raise httpx.ReadTimeout("stored, the answer lost", request=request)
        uploading = {"id": len(self.stored), "status": "PREPARED"}
        return httpx.Response(200, json={"uploading": uploading})


def yandex_unknown(settings: Settings, **table: Any) -> Settings:
    values = {"base_url": "http://ym.test", "max_wait_s": 0, "backoff_base_s": 0.05} | table
    dests = {"ym": Destination(platform="yandex", token="t", counter_id="42")}
    ym = settings.model_copy(update={"yandex": YandexSettings(**values), "destinations": dests})
    at = int(time.time()) - 60
    Dispatcher(ym).enqueue({"ClientId": "1.1", "Target": "paid", "DateTime": at}, "ym")
    return ym


def drain_until(engine: Engine, done: Callable[[], bool], drains: int = 30) -> None:
    """Drain `ym` as the scheduler would: each time it is due, until `done`."""
    for _ in range(drains):
        if done():
            return
        report = engine.drain("ym")
        time.sleep(min(2.0, max(0.0, report.not_before_ms / 1000 - time.time())))  # due
    assert done(), "not done after the drains"


def test_a_resend_whose_answer_is_lost_too_is_looked_up_only_after_the_listing_delay(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given an upload lost before Yandex stored it, then its resend stored with the answer
    # lost, and a listing that shows an upload only 0.4 s after it was stored
    ym = yandex_unknown(settings, lookup_delay_s=0.5)
    platform = LaggingYandex(lag_s=0.4, dropped=frozenset({1}), lost={2})
    engine = engine_for(ym, redis_client, platform)
    # When it is drained until the batch is settled
    drain_until(engine, lambda: redis_client.xlen(keys.stream("ym")) == 0)
    # Then Yandex holds exactly one upload of the batch: the look-up after the resend
    # waited lookup_delay_s from the resend, and found it
    assert len(platform.stored) == 1
    assert platform.posts == 2


def test_a_look_up_that_keeps_failing_ends_in_dead_letters_saying_the_outcome_is_unknown(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given an upload whose answer was lost, and a listing that answers 500 every time
    ym = yandex_unknown(settings, lookup_delay_s=0, max_attempts=3)
    platform = LaggingYandex(lag_s=0, lost={1}, listing_status=500)  # 3 attempts: 1 + 2
    engine = engine_for(ym, redis_client, platform)
    # When it is drained as it becomes due
    dead = DeadLetters(Dispatcher(ym))
    drain_until(engine, lambda: dead.count("yandex") == 1)
    # Then the row was uploaded once, never again while its outcome was unknown, and its
    # dead letter says to check before replaying
    assert platform.posts == 1
    (letter,) = dead.list("yandex")
    assert "outcome unknown, the look-up failed" in letter.reason
    assert "check before replaying" in letter.reason
    assert platform.listings == 2


def test_a_look_up_refused_for_its_credentials_pauses_the_destination(
    settings: Settings, redis_client: redis.Redis
) -> None:
    ym = yandex_unknown(settings, lookup_delay_s=0)
    platform = LaggingYandex(lag_s=0, lost={1}, listing_status=403)
    engine = engine_for(ym, redis_client, platform)
    drain_until(engine, lambda: bool(redis_client.hget(keys.state("ym"), "paused")), 5)
    assert platform.posts == 1
    assert redis_client.xlen(keys.stream("ym")) == 1  # kept for when the token is mended
    reason = redis_client.hget(keys.state("ym"), "pause_reason") or b""
    assert b"credentials refused (403) listing uploads" in reason
