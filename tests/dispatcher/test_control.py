"""`Control.status`: what an operator sees of one destination, on a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
import redis

from dispatcher import Control, DeadLetters, Dispatcher, Selection, keys
from dispatcher.errors import ConfigurationError, StorageError
from tests.pipeline.events import many


def test_a_destination_with_nothing_stored_yet_shows_zeros(dispatcher: Dispatcher) -> None:
    status = Control(dispatcher).status("li-main")
    assert (status.backlog, status.in_flight, status.delivered, status.paused) == (0, 0, 0, False)
    assert status.refresh_token_expires_at == 0.0  # no OAuth


def test_waiting_events_show_as_the_backlog(dispatcher: Dispatcher) -> None:
    dispatcher.enqueue_many(many(3), "li-main")
    status = Control(dispatcher).status("li-main")
    assert (status.backlog, status.in_flight) == (3, 0)
    assert status.oldest_ms > 0


def test_an_error_reply_is_a_storage_error(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given the destination's state key holds something that is not a hash
    redis_client.set(keys.state("li-main"), "not a hash")
    # When its status is read, then the error is the documented one, naming Redis's words
    with pytest.raises(StorageError, match="WRONGTYPE"):
        Control(dispatcher).status("li-main")


def test_an_orphan_goes_to_the_dead_letters_of_the_platform_its_stream_records_only(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # Given an orphaned LinkedIn stream (its destination no longer configured)
    stream = keys.stream("li-gone")
    redis_client.xgroup_create(stream, keys.GROUP, "0", mkstream=True)
    redis_client.xadd(stream, {"p": b"{}", "e": b"e-1", "t": b"0"})
    redis_client.hset(keys.state("li-gone"), "platform", "linkedin")
    control = Control(dispatcher)
    # Then another platform, an unknown one and a stream that is not there are refused,
    # and nothing moved
    for name, platform, words in [
        ("li-gone", "pinterest", "records platform 'linkedin', not 'pinterest'"),
        ("li-gone", "nosuch", "unknown platform 'nosuch'"),
        ("nothing-here", "linkedin", "no stream of 'nothing-here'"),
    ]:
        with pytest.raises(ConfigurationError, match=words):
            control.dead_letter_orphan(name, platform)
    assert redis_client.xlen(stream) == 1
    assert redis_client.exists(keys.deadletters("pinterest")) == 0
    # And its own platform takes it
    assert control.dead_letter_orphan("li-gone", "linkedin") == 1
    assert redis_client.xlen(keys.deadletters("linkedin")) == 1


def test_a_pause_without_a_reason_is_refused_and_changes_nothing(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    control = Control(dispatcher)
    for reason in ("", "   "):
        with pytest.raises(ConfigurationError, match="needs a reason"):
            control.pause("li-main", reason)
    assert not redis_client.hget(keys.state("li-main"), "paused")
    control.pause("li-main", "deploy")
    assert control.status("li-main").pause_reason == "deploy"


@pytest.mark.parametrize("wrong", [None, 5, b"li-main"])
def test_a_destination_that_is_not_text_is_a_configuration_error(
    dispatcher: Dispatcher, wrong: object
) -> None:
    control, bad = Control(dispatcher), cast(Any, wrong)
    calls: list[Callable[[], object]] = [
        lambda: control.status(bad),
        lambda: control.pause(bad),
        lambda: control.resume(bad),
        *([lambda: control.trace("ev-1", bad)] if wrong is not None else []),  # None: any
        lambda: control.trace(bad),
        lambda: control.dead_letter_orphan(bad),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError):
            call()
    with pytest.raises(ConfigurationError, match="a list of destination ids"):
        control.statuses(cast(Any, "li-main"))


@pytest.mark.parametrize(
    "selection",
    [{"ids": 5}, {"ids": "1-0"}, {"ids": ["garbage"]}, {"ids": [f"{2**64}-0"]},
     {"since_ms": -5}, {"since_ms": 1.5}, {"since_ms": "abc"}, {"until_ms": 10**30},
     {"until_ms": True}, {"reason": 5}, {"destination": 5}],
)  # fmt: skip
def test_a_selection_that_cannot_select_is_refused_before_redis_is_asked(
    selection: dict[str, object],
) -> None:
    with pytest.raises(ConfigurationError):
        Selection(**cast(Any, selection))


@pytest.mark.parametrize("wrong", ["garbage", "", "-1", "1-0-0", f"{2**64}-1", "jane@example.com"])
def test_showing_a_dead_letter_id_that_cannot_be_one_names_it(
    dispatcher: Dispatcher, wrong: str
) -> None:
    with pytest.raises(ConfigurationError, match="is not a dead letter id") as caught:
        DeadLetters(dispatcher).show("linkedin", wrong)
    assert "jane" not in str(caught.value)
