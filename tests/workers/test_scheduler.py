"""The scheduler on a real Redis, with a Celery app that records what it is asked to send."""

from __future__ import annotations

import time
from typing import Any

import redis

from dispatcher import Settings, keys
from workers.scheduler import DRAIN_TASK, Scheduler, split


class Recorder:
    """Stands in for the Celery app: keeps every `send_task` call."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any], str]] = []

    def send_task(self, name: str, args: list[Any], queue: str, expires: float) -> None:
        self.sent.append((name, args, queue))

    def drains(self) -> list[list[str]]:
        return [args[0] for name, args, _ in self.sent if name == DRAIN_TASK]


def scheduler(
    settings: Settings, client: redis.Redis, slots: int, name: str
) -> tuple[Scheduler, Recorder]:
    """A scheduler of `slots` pool slots for worker `name`, and what it sent."""
    app = Recorder()
    return Scheduler(app, settings, ["linkedin"], client, slots=slots, name=name), app


def make_due(client: redis.Redis, n: int) -> list[str]:
    names = [f"li-{i}" for i in range(n)]
    client.zadd(keys.due("linkedin"), dict.fromkeys(names, time.time() * 1000 - 1))
    return names


def test_split_gives_every_slot_a_task_and_keeps_groups_within_the_size() -> None:
    names = [f"d{i}" for i in range(40)]
    assert split(names[:8], 2, 16) == [names[0:4], names[4:8]]
    assert split(names[:8], 1, 16) == [names[:8]]
    assert split(names[:3], 8, 16) == [[n] for n in names[:3]]
    assert [len(t) for t in split(names, 2, 16)] == [14, 13, 13]
    assert [len(t) for t in split(names, 0, 16)] == [14, 13, 13]
    assert split([], 4, 16) == []
    assert [n for task in split(names, 5, 16) for n in task] == names


def test_due_destinations_are_split_over_the_live_workers_pool_slots(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given two workers with one pool process each, both of whose schedulers have looked
    first, sent = scheduler(settings, redis_client, 1, "host-1")
    second, _ = scheduler(settings, redis_client, 1, "host-2")
    assert first.tick() == 0
    assert second.tick() == 0
    # When 8 destinations are due and one scheduler claims them
    names = make_due(redis_client, 8)
    assert first.tick() == 8
    # Then it sends two drain tasks of 4, one for each process, and the other sends none
    assert sent.drains() == [names[:4], names[4:]]
    assert second.tick() == 0


def test_one_worker_gets_one_task_and_many_destinations_are_grouped(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given one worker with one pool process
    only, sent = scheduler(settings, redis_client, 1, "host-1")
    # When 8, then 40 destinations are due
    eight = make_due(redis_client, 8)
    only.tick()
    redis_client.delete(keys.due("linkedin"))
    make_due(redis_client, 40)
    only.tick()
    # Then the 8 travel as one task, the 40 as tasks of at most drain_group_size
    drains = sent.drains()
    assert drains[0] == eight
    assert [len(d) for d in drains[1:]] == [14, 13, 13]
    assert settings.drain_group_size == 16


def test_a_worker_that_stopped_looking_no_longer_counts(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a worker with 4 slots whose last look was long ago, and one live worker
    redis_client.zadd(keys.schedulers("linkedin"), {"4|gone": time.time() * 1000 - 1})
    live, sent = scheduler(settings, redis_client, 1, "host-1")
    # When 8 destinations are due
    make_due(redis_client, 8)
    live.tick()
    # Then they go as one task (the gone worker's slots are not counted) and it is forgotten
    assert sent.drains() == [[f"li-{i}" for i in range(8)]]
    assert redis_client.zrange(keys.schedulers("linkedin"), 0, -1) == [b"1|host-1"]


def test_a_changed_pool_size_replaces_the_worker_s_entry(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a worker that looked with 2 slots, then with 3 (an autoscaled pool)
    worker, _ = scheduler(settings, redis_client, 2, "host-1")
    worker.tick()
    worker.slots = 3
    worker.tick()
    # Then it counts once, with 3
    assert redis_client.zrange(keys.schedulers("linkedin"), 0, -1) == [b"3|host-1"]


def test_a_full_claim_looks_again_at_once_a_partial_one_waits_a_tick(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a scheduler that claims at most 3 destinations per look
    small = settings.model_copy(update={"scheduler_batch": 3})
    worker, _ = scheduler(small, redis_client, 1, "host-1")
    # When 4 are due
    make_due(redis_client, 4)
    # Then the first look claims 3 and wants another look at once; the second claims 1
    assert worker.tick() == 3
    assert worker.more
    assert worker.tick() == 1
    assert not worker.more


def test_the_roll_is_renewed_once_a_second_not_on_every_look(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a worker whose scheduler has just looked
    worker, _ = scheduler(settings, redis_client, 1, "host-1")
    worker.tick()
    first = redis_client.zscore(keys.schedulers("linkedin"), "1|host-1")
    # When it looks again at once
    time.sleep(0.01)
    worker.tick()
    # Then its place in the roll was not rewritten (an idle look stays a small read)
    assert redis_client.zscore(keys.schedulers("linkedin"), "1|host-1") == first


def test_an_idle_scheduler_looks_less_often_but_never_past_what_it_knows_is_due(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a scheduler and one destination due in 60 s (backing off, say)
    worker, _ = scheduler(settings, redis_client, 1, "host-1")
    redis_client.zadd(keys.due("linkedin"), {"li-later": time.time() * 1000 + 60_000})
    tick, idle = settings.scheduler_tick_s, settings.scheduler_idle_tick_s
    # When its looks find nothing, it waits a tick for the first 5 s
    assert worker.tick() == 0
    assert 59 < worker.next_due_s <= 60
    assert worker.wait_s(0, now=100.0) == tick
    assert worker.wait_s(0, now=104.9) == tick
    # Then after 5 s of nothing it waits the idle tick
    assert worker.wait_s(0, now=105.0) == idle
    # And never past a due time it saw: 0.2 s before the destination is due, 0.2 s
    redis_client.zadd(keys.due("linkedin"), {"li-later": time.time() * 1000 + 200})
    assert worker.tick() == 0
    assert tick <= worker.wait_s(0, now=106.0) <= 0.2
    # And a look that sends something is back to a tick
    make_due(redis_client, 1)
    assert worker.tick() == 1
    assert worker.wait_s(1, now=107.0) == tick
    assert worker.wait_s(0, now=108.0) == tick  # the idle time starts again


def test_a_drain_in_progress_keeps_the_scheduler_at_its_tick(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a destination whose drain holds it, due again within its lease (the heartbeat)
    worker, _ = scheduler(settings, redis_client, 1, "host-1")
    redis_client.zadd(keys.due("linkedin"), {"li-busy": time.time() * 1000 + 2_000})
    assert worker.tick() == 0
    # When looks have found nothing for long
    worker.wait_s(0, now=0.0)
    # Then the scheduler still looks every tick, so the drain's next turn is not delayed
    assert worker.wait_s(0, now=60.0) == settings.scheduler_tick_s


def test_an_idle_scheduler_never_waits_past_its_platforms_max_wait(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given LinkedIn partial batches that wait at most 0.2 s, and nothing scheduled
    quick = settings.model_copy(
        update={"linkedin": settings.linkedin.model_copy(update={"max_wait_s": 0.2})}
    )
    worker, _ = scheduler(quick, redis_client, 1, "host-1")
    assert worker.tick() == 0
    # When its looks have found nothing for long, Then it still looks every 0.2 s
    worker.wait_s(0, now=0.0)
    assert worker.wait_s(0, now=60.0) == 0.2
