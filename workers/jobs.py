"""Background jobs on the platform's side: record them, follow them, surface failures.

Yandex answers an upload with an upload id and processes it later; vNative answers an
import with a job id. The settle script acknowledges the events once the platform accepted
the job and records the job with a copy of its events; `track` polls it until it
finishes, or dead-letters its events once it is older than `job_max_age_s`. A job that
fails dead-letters its events with the platform's words, so an accepted event is still
never lost silently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import httpx
import redis

from dispatcher import keys
from dispatcher.errors import UnknownDestinationError
from dispatcher.registry import Registry
from dispatcher.settings import Destination
from dispatcher.storage import run
from workers.adapters import JobAdapter, JobState, adapter_for
from workers.adapters.base import retry_after_s
from workers.limiter import Limiter
from workers.request import Failed, NotSent, RequestPath, Target

log = logging.getLogger(__name__)
JOB_TTL_S = 7 * 86_400  # how long a finished job stays visible to operators
POLL_BATCH = 1000
THROTTLE_WAIT_S = 5.0  # a 429 on a poll without Retry-After: look again this much later
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """One recorded job."""

    id: str
    platform: str
    destination: str
    batch_id: str
    events: int
    state: str
    finished: bool
    failed: bool
    detail: str
    submitted_at_ms: int


def load(client: redis.Redis, platform: str, job_id: str, shard: int = 0) -> Job | None:
    """A recorded job of `shard` (its destination's), or None."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.job(platform, job_id, shard)))
    if b"destination" not in raw:
        return None
    f = {k.decode(): v.decode() for k, v in raw.items()}
    return Job(
        id=job_id,
        platform=platform,
        destination=f["destination"],
        batch_id=f["batch_id"],
        events=int(f["events"]),
        state=f["state"],
        finished=f["finished"] == "1",
        failed=f["failed"] == "1",
        detail=f.get("detail", ""),
        submitted_at_ms=int(f["submitted_at_ms"]),
    )


def recent(client: redis.Redis, platform: str, limit: int = 50) -> list[Job]:
    """The most recently submitted jobs, newest first (of every shard)."""
    newest: list[tuple[float, str, int]] = []
    for shard in keys.shards():
        got = client.zrevrange(keys.jobs_index(platform, shard), 0, limit - 1, withscores=True)
        newest += [(score, raw.decode(), shard) for raw, score in cast(Any, got)]
    newest.sort(reverse=True)
    jobs = [load(client, platform, job_id, shard) for _, job_id, shard in newest[:limit]]
    return [j for j in jobs if j is not None]


def track(
    registry: Registry,
    client: redis.Redis,
    path: RequestPath,
    platform: str,
    now_ms: int,
    shard: int = 0,
) -> dict[str, int]:
    """Follow the jobs that are due: one listing call per destination (counter, API key)
    for all of its due jobs, a poll of its own only for a job the listing does not show.
    Each job is finished, failed (its events dead-lettered), expired or rescheduled; a
    destination whose calls must wait is rescheduled without holding up the others.
    The jobs are those of one shard (the only one on a single node). Destinations are
    looked up in `registry` (registered at runtime too); a job whose destination this
    process does not know (removed, or its token unreadable here) is not polled but looked
    at again later, until `job_max_age_s` ends it."""
    settings = registry.settings
    adapter = cast(JobAdapter, adapter_for(platform))
    table = settings.platform(platform)
    poll_ms = int(float(getattr(table, "job_poll_interval_s", 30.0)) * 1000)
    max_age_ms = int(float(getattr(table, "job_max_age_s", 86_400.0)) * 1000)
    counts = dict.fromkeys(("polled", "listed", "finished", "failed", "expired", "waiting"), 0)
    groups: dict[str, list[Job]] = {}
    for job in _claim_due(client, platform, table.timeout_s, now_ms, shard):
        if now_ms - job.submitted_at_ms > max_age_ms:
            detail = (
                f"never finished within job_max_age_s (last state {job.state}); the platform "
                "may still have imported these events: check before replaying them"
            )
            _update(client, platform, job, JobState("EXPIRED", True, True, detail), 0)
            counts["expired"] += 1
        elif _destination(registry, job.destination) is None:
            _later(client, platform, [job], now_ms + poll_ms, counts)  # not dead-lettered:
            # the platform took these events; a replay would send them twice
        else:
            groups.setdefault(job.destination, []).append(job)
    for name, group in groups.items():
        dest = registry.destination(name)
        target = Target(name, dest, table, adapter, adapter.poll_limits(dest, table))
        listed: dict[str, JobState] = {}
        if len(group) > 1:
            found = call_unless_throttled(
                path, target, partial(adapter.list_request, dest, table), adapter.parse_list, now_ms
            )
            if isinstance(found, NotSent):
                _later(client, platform, group, now_ms + int(found.wait_s * 1000), counts)
                continue
            if isinstance(found, dict):
                listed, counts["listed"] = found, counts["listed"] + 1
        for k, job in enumerate(group):
            seen = listed.get(job.id)
            state: JobState | NotSent | Failed
            if seen is None or (seen.finished and not adapter.listing_has_detail):
                request = partial(adapter.job_request, dest, table, job.id)
                state = call_unless_throttled(
                    path, target, request, adapter.parse_job, now_ms, holder=f"job-{job.id}"
                )
                counts["polled"] += 1
            else:
                state = seen
            if isinstance(state, NotSent):
                _later(client, platform, group[k:], now_ms + int(state.wait_s * 1000), counts)
                break
            if isinstance(state, Failed):
                _later(client, platform, [job], now_ms + poll_ms, counts)
                continue
            _update(client, platform, job, state, now_ms + poll_ms)
            counts["finished"] += state.finished
            counts["failed"] += state.failed
        # A draining destination's last job ended: its removal waited for this one.
        if dest.draining and registry.finish_draining(name):
            log.warning("destination %s: backlog and jobs done, removed from the registry", name)
    return counts


@dataclass(frozen=True)
class Throttled:
    """A poll or listing the platform answered 420/429: wait, it is not an error."""

    wait_s: float


def call_unless_throttled(
    path: RequestPath,
    target: Target,
    build: Callable[[], httpx.Request],
    parse: Callable[[httpx.Response], T],
    now_ms: int,
    holder: str = "",
) -> T | NotSent | Failed:
    """`path.call` for a poll or a listing: a 420/429 is no error and no state but a wait,
    for every worker (the scopes are blocked for as long as the platform says)."""
    got = path.call(target, build, partial(_unless_throttled, parse), holder=holder)
    if isinstance(got, Throttled):
        Limiter(path.redis, target.limits).block_until(now_ms + int(got.wait_s * 1000))
        return NotSent(got.wait_s)
    return got


def _unless_throttled(
    parse: Callable[[httpx.Response], T], response: httpx.Response
) -> T | Throttled:
    if response.status_code in (420, 429):
        return Throttled(retry_after_s(response) or THROTTLE_WAIT_S)
    return parse(response)


def _destination(registry: Registry, name: str) -> Destination | None:
    try:
        return registry.destination(name)  # one not known yet: Redis is asked at once
    except UnknownDestinationError:
        return None


def _claim_due(
    client: redis.Redis,
    platform: str,
    timeout_s: float,
    now_ms: int,
    shard: int,
) -> list[Job]:
    """The due jobs, each claimed so no other tracker takes it meanwhile."""
    open_jobs = keys.open_jobs(platform, shard)
    due = cast(list[bytes], client.zrangebyscore(open_jobs, "-inf", now_ms, 0, POLL_BATCH))
    hold_ms = int(timeout_s * 2000) + 1000
    claimed = []
    for raw_id in due:
        job_id = raw_id.decode()
        if not run(
            client, "workers", "claim_job.lua", [open_jobs], job_id, now_ms, now_ms + hold_ms
        ):
            continue  # another tracker has it
        job = load(client, platform, job_id, shard)
        if job is None:
            client.zrem(open_jobs, job_id)
            continue
        claimed.append(job)
    return claimed


def _later(
    client: redis.Redis, platform: str, jobs: list[Job], at_ms: int, counts: dict[str, int]
) -> None:
    by_shard: dict[int, dict[str, int]] = {}
    for job in jobs:
        by_shard.setdefault(keys.shard(job.destination), {})[job.id] = at_ms
    for shard, scores in by_shard.items():  # one ZADD per shard (one on a single node)
        client.zadd(keys.open_jobs(platform, shard), scores)
    counts["waiting"] += len(jobs)


def _update(client: redis.Redis, platform: str, job: Job, state: JobState, next_ms: int) -> None:
    shard = keys.shard(job.destination)
    pipe = client.pipeline(transaction=True)
    pipe.hset(
        keys.job(platform, job.id, shard),
        mapping={
            "state": state.state,
            "detail": state.detail or job.detail,
            "finished": int(state.finished),
            "failed": int(state.failed),
        },
    )
    if not state.finished:
        pipe.zadd(keys.open_jobs(platform, shard), {job.id: next_ms})
        pipe.execute()
        return
    pipe.zrem(keys.open_jobs(platform, shard), job.id)
    pipe.expire(keys.job(platform, job.id, shard), JOB_TTL_S)
    if state.failed:
        _dead_letter_events(pipe, client, platform, job, state)
        log.error(
            "%s job %s of %s failed: %s %s",
            platform,
            job.id,
            job.destination,
            state.state,
            state.detail,
        )
    pipe.delete(keys.job_events(platform, job.id, shard))
    pipe.execute()


def _dead_letter_events(
    pipe: Any, client: redis.Redis, platform: str, job: Job, state: JobState
) -> None:
    shard = keys.shard(job.destination)
    rows = cast(list[bytes], client.lrange(keys.job_events(platform, job.id, shard), 0, -1))
    reason = f"{platform} job {job.id} finished {state.state}: {state.detail}"[:1000]
    for raw in rows:
        row = json.loads(raw)
        pipe.xadd(
            keys.deadletters(platform, shard),
            {"d": job.destination, "e": row["e"], "p": row["p"], "t": row["t"], "reason": reason,
             "status": "", "excerpt": state.detail[:500], "attempts": 1, "at": job.submitted_at_ms},
        )  # fmt: skip
    pipe.hincrby(keys.state(job.destination), "dead", len(rows))
