"""`Control.status`: what an operator sees of one destination, on a real Redis."""

from __future__ import annotations

import pytest
import redis

from dispatcher import Control, Dispatcher, keys
from dispatcher.errors import StorageError
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
