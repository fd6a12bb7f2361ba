"""Pinterest end to end: real Redis, real Celery worker processes, the Pinterest sandbox."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import Dispatcher, InvalidEventError, keys
from dispatcher.events.pinterest import PinterestConversionEvent
from dispatcher.identity import hash_email
from dispatcher.settings import Route
from sandboxes.pinterest import NO_EMAIL_WARNING, contract_errors
from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_stack
from tests.pipeline.events import full_conversion

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]

ACCOUNT, TEST_ACCOUNT = "549755885175", "549755885176"
CONFIG = {
    "pinterest": {
        "max_wait_s": 0.3,
        "rate_per_min": 60_000,
        "burst": 50,
        "backoff_base_s": 0.2,
        "timeout_s": 3.0,
    },
    "destinations": {
        "pin-a": {"platform": "pinterest", "token": "token-a", "ad_account_id": ACCOUNT},
        "pin-test": {
            "platform": "pinterest",
            "token": "token-t",
            "ad_account_id": TEST_ACCOUNT,
            "test": True,
        },
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    config = json.loads(json.dumps(CONFIG))
    yield from start_stack(
        tmp_path_factory.mktemp("pinterest"), redis_url, config, platform="pinterest"
    )


def pin_event(i: int, prefix: str = "ev", **changes: Any) -> dict[str, Any]:
    """A valid Pinterest event with a caller-chosen id and a raw email (hashed at enqueue)."""
    user = {"em": f"User{i}@Example.com", "client_ip_address": "203.0.113.9"}
    return {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": int(time.time()) - 60,
        "event_id": f"{prefix}-{i}",
        "user_data": user | {"client_user_agent": "Mozilla/5.0"},
        "custom_data": {"currency": "EUR", "value": "12.50", "order_id": f"order-{i}"},
        **changes,
    }


def received(stack: Stack) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = stack.sandbox.get("received")
    return calls


def event_ids(stack: Stack) -> list[str]:
    return stack.sandbox.event_ids("event_id")


def statuses(stack: Stack) -> list[int]:
    return [c["status"] for c in stack.sandbox.calls()]


def test_2001_events_arrive_as_1000_1000_and_1_each_once_and_valid(stack: Stack) -> None:
    # Given 2,001 events enqueued at once
    stack.dispatcher.enqueue_many([pin_event(i, "bulk") for i in range(2001)], "pin-a")
    # When the workers drain them
    wait_for(lambda: len(event_ids(stack)) >= 2001, 60, "2,001 events to arrive")
    # Then the sandbox took two full batches and one of one, each event exactly once
    calls = received(stack)
    assert sorted(c["n_events"] for c in calls) == [1, 1000, 1000]
    assert set(Counter(event_ids(stack)).values()) == {1}
    assert len(event_ids(stack)) == 2001
    # (the platform records a call before the worker settles it)
    wait_for(lambda: stack.backlog("pin-a") == 0, 30, "the stream to empty")
    # And every body it accepted is valid under Pinterest's official contract
    for call in calls:
        assert call["path"] == f"/v5/ad_accounts/{ACCOUNT}/events"
        assert call["query"] == {}
        assert contract_errors({"data": call["events"]}) == []


def test_one_failed_event_is_dead_lettered_and_the_other_999_acknowledged(stack: Stack) -> None:
    # Given a batch of 1000 whose event 567 carries an event name Pinterest does not take
    # (an older producer's "purchase"), written straight to the stream past our model
    rows = []
    for i in range(1000):
        model = PinterestConversionEvent.model_validate(pin_event(i, "part"))
        event_id, payload = model.to_payload()
        if i == 567:
            payload = json.dumps(json.loads(payload) | {"event_name": "purchase"}).encode()
        rows.append((event_id, payload, model.happened_at_ms()))
    assert not stack.dispatcher.write({"pin-a": rows})  # rows past validation, as stored
    # When it is delivered
    wait_for(lambda: stack.dead.count("pinterest") == 1 and stack.backlog("pin-a") == 0, 60)
    # Then exactly event 567 is a dead letter with Pinterest's error_message
    (letter,) = stack.dead.list("pinterest")
    assert letter.event_id == "part-567"
    assert letter.status == 422
    assert "event_name: 'purchase' is not one of" in letter.reason
    # And the 999 others were taken in that one call and never sent again
    delivered = event_ids(stack)
    assert sorted(delivered) == sorted(f"part-{i}" for i in range(1000) if i != 567)
    assert statuses(stack) == [422]


def test_warnings_from_pinterest_reach_the_worker_log(stack: Stack) -> None:
    # Given an event identified only by IP and user agent, which Pinterest warns about
    user = {"client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0"}
    stack.dispatcher.enqueue(pin_event(1, "warned", user_data=user), "pin-a")
    # When it is delivered, then a worker logs Pinterest's warning
    wait_for(lambda: event_ids(stack) == ["warned-1"], 30, "delivery")
    logs = ("worker0", "worker1")
    wait_for(lambda: any(NO_EMAIL_WARNING in stack.procs.log(n) for n in logs), 10, "the warning")


def test_throttling_is_retried_without_loss(stack: Stack) -> None:
    # Given Pinterest answers 429 twice, asking for a one-second wait
    stack.sandbox.control("faults", {"status": 429, "count": 2, "retry_after": 1})
    # When 5 events are enqueued
    stack.dispatcher.enqueue_many([pin_event(i, "throttled") for i in range(5)], "pin-a")
    # Then they all arrive in the call after the two refused ones, and none is dead-lettered
    wait_for(lambda: len(event_ids(stack)) == 5, 30, "delivery after throttling")
    assert statuses(stack) == [429, 429, 200]
    assert stack.dead.count("pinterest") == 0


def test_an_outage_is_retried_without_loss(stack: Stack) -> None:
    # Given the endpoint is ramped down (503, code 4197) for three calls
    stack.sandbox.control("faults", {"status": 503, "count": 3})
    # When 5 events are enqueued
    stack.dispatcher.enqueue_many([pin_event(i, "outage") for i in range(5)], "pin-a")
    # Then after three refused calls one call delivers all 5, and nothing is dead-lettered
    wait_for(lambda: len(event_ids(stack)) == 5, 30, "delivery after the outage")
    assert statuses(stack) == [503, 503, 503, 200]
    assert stack.dead.count("pinterest") == 0
    # (the sandbox records the call before the worker settles it: wait for the settle)
    wait_for(lambda: stack.redis.hget(keys.state("pin-a"), "failures") == b"0", 10, "the reset")


def test_a_test_destination_sends_with_test_true_and_nothing_is_recorded(stack: Stack) -> None:
    # Given a destination configured with test = true
    # When 3 events are enqueued for it
    stack.dispatcher.enqueue_many([pin_event(i, "dry") for i in range(3)], "pin-test")
    # Then the sandbox sees one ?test=true call, processes it and records no events
    wait_for(lambda: received(stack), 30, "the test call")
    wait_for(lambda: stack.backlog("pin-test") == 0, 30, "the stream to empty")
    (call,) = received(stack)
    assert call["path"] == f"/v5/ad_accounts/{TEST_ACCOUNT}/events"
    assert call["query"] == {"test": "true"}
    assert call["n_events"] == 0
    assert event_ids(stack) == []
    assert statuses(stack) == [200]
    assert stack.dead.count("pinterest") == 0


def test_bad_input_is_refused_at_enqueue_naming_the_field_and_nothing_is_written(
    stack: Stack,
) -> None:
    # Given one good event and one whose user_data has no usable identifier
    events = [pin_event(0, "bad"), pin_event(1, "bad", user_data={"ph": "+1 650 555 0100"})]
    # When they are enqueued together
    with pytest.raises(InvalidEventError) as caught:
        stack.dispatcher.enqueue_many(events, "pin-a")
    # Then the error names event 1's user_data, and Redis and Pinterest saw nothing
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, "user_data")]
    assert stack.redis.exists(keys.stream("pin-a")) == 0
    assert stack.sandbox.calls() == []


def test_a_revoked_token_pauses_the_destination_with_pinterests_reason(stack: Stack) -> None:
    # Given Pinterest no longer accepts destination pin-a's token
    stack.sandbox.control("config", {"revoked_tokens": ["token-a"]})
    stack.dispatcher.enqueue_many([pin_event(i, "paused") for i in range(3)], "pin-a")
    # When a worker tries to deliver, then pin-a pauses with the reason and keeps its events
    wait_for(lambda: stack.control.status("pin-a").paused, 30, "pin-a to pause")
    status = stack.control.status("pin-a")
    assert "code 2: Authentication failed." in status.pause_reason
    assert status.backlog == 3
    assert hash_email("user1@example.com") not in status.pause_reason


def test_every_conversion_field_reaches_pinterests_request(stack: Stack) -> None:
    # Given a purchase using every neutral field, routed to Pinterest
    routes = [Route(event="purchase", destination="pin-a")]
    with Dispatcher(stack.settings.model_copy(update={"routes": routes})) as producer:
        assert producer.enqueue_conversion(full_conversion()).skipped == []
    # When it is delivered, the sandbox (Pinterest's contract) took it with every field
    wait_for(lambda: len(stack.sandbox.get("events")) == 1, 30, "the event")
    (event,) = stack.sandbox.get("events")
    assert (event["event_name"], event["action_source"]) == ("checkout", "app_ios")
    assert (event["opt_out"], event["partner_name"]) == (True, "ss-shop")
    assert (event["app_id"], event["app_name"], event["app_version"]) == (
        "429047995",
        "Shop",
        "7.1",
    )
    assert (event["device_brand"], event["device_model"]) == ("Apple", "iPhone15,2")
    assert (event["os_version"], event["wifi"]) == ("17.1", True)
    custom = event["custom_data"]
    assert (custom["order_id"], custom["content_ids"], custom["num_items"]) == ("o-9", ["sku-1"], 2)
    assert custom["contents"] == [
        {"id": "sku-1", "item_name": "Mug", "item_price": "9.90", "quantity": 2}
    ]
    assert (custom["value"], custom["currency"]) == ("49.90", "EUR")
    user = event["user_data"]
    assert set(user) >= {"em", "fn", "ln", "external_id", "country", "click_id"}
    assert contract_errors({"data": [event]}) == []
