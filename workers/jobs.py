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
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import redis

from dispatcher import keys
from dispatcher.settings import Settings
from dispatcher.storage import lua
from workers.adapters import JobAdapter, JobState, adapter_for
from workers.request import Failed, NotSent, RequestPath, Target

log = logging.getLogger(__name__)
JOB_TTL_S = 7 * 86_400  # how long a finished job stays visible to operators
POLL_BATCH = 1000


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


def load(client: redis.Redis, platform: str, job_id: str) -> Job | None:
    """A recorded job, or None."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.job(platform, job_id)))
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
    """The most recently submitted jobs, newest first."""
    ids = cast(list[bytes], client.zrevrange(keys.jobs_index(platform), 0, limit - 1))
    jobs = [load(client, platform, i.decode()) for i in ids]
    return [j for j in jobs if j is not None]


def track(
    settings: Settings, client: redis.Redis, path: RequestPath, platform: str, now_ms: int
) -> dict[str, int]:
    """Poll the jobs that are due; finish, fail (dead-letter their events), expire or
    reschedule each. A job whose poll cannot be made now waits; the others go on."""
    adapter = cast(JobAdapter, adapter_for(platform))
    table = settings.platform(platform)
    poll_ms = int(float(getattr(table, "job_poll_interval_s", 30.0)) * 1000)
    max_age_ms = int(float(getattr(table, "job_max_age_s", 86_400.0)) * 1000)
    due = cast(
        list[bytes], client.zrangebyscore(keys.open_jobs(platform), "-inf", now_ms, 0, POLL_BATCH)
    )
    counts = {"polled": 0, "finished": 0, "failed": 0, "expired": 0, "waiting": 0}
    hold_ms = int(table.timeout_s * 2000)
    for raw_id in due:
        job_id = raw_id.decode()
        claimed = client.eval(
            lua("workers", "claim_job.lua"), 1, keys.open_jobs(platform), job_id, now_ms,
            now_ms + hold_ms,
        )  # fmt: skip
        if not claimed:
            continue  # another poller has it
        job = load(client, platform, job_id)
        if job is None or job.destination not in settings.destinations:
            client.zrem(keys.open_jobs(platform), job_id)
            continue
        if now_ms - job.submitted_at_ms > max_age_ms:
            detail = f"never finished within job_max_age_s (last state {job.state})"
            _update(client, platform, job, JobState("EXPIRED", True, True, detail), 0)
            counts["expired"] += 1
            continue
        dest = settings.destination(job.destination)
        target = Target(job.destination, dest, table, adapter, adapter.limits(dest, table))
        state = path.call(
            target,
            partial(adapter.job_request, dest, table, job_id),
            adapter.parse_job,
            holder=f"job-{job_id}",
        )
        if isinstance(state, NotSent | Failed):
            wait_ms = int(state.wait_s * 1000) if isinstance(state, NotSent) else poll_ms
            client.zadd(keys.open_jobs(platform), {job_id: now_ms + max(wait_ms, 200)})
            counts["waiting"] += 1
            continue
        counts["polled"] += 1
        _update(client, platform, job, state, now_ms + poll_ms)
        counts["finished"] += state.finished
        counts["failed"] += state.failed
    return counts


def _update(client: redis.Redis, platform: str, job: Job, state: JobState, next_ms: int) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.hset(
        keys.job(platform, job.id),
        mapping={
            "state": state.state,
            "detail": state.detail or job.detail,
            "finished": int(state.finished),
            "failed": int(state.failed),
        },
    )
    if not state.finished:
        pipe.zadd(keys.open_jobs(platform), {job.id: next_ms})
        pipe.execute()
        return
    pipe.zrem(keys.open_jobs(platform), job.id)
    pipe.expire(keys.job(platform, job.id), JOB_TTL_S)
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
    pipe.delete(keys.job_events(platform, job.id))
    pipe.execute()


def _dead_letter_events(
    pipe: Any, client: redis.Redis, platform: str, job: Job, state: JobState
) -> None:
    rows = cast(list[bytes], client.lrange(keys.job_events(platform, job.id), 0, -1))
    reason = f"{platform} job {job.id} finished {state.state}: {state.detail}"[:1000]
    for raw in rows:
        row = json.loads(raw)
        pipe.xadd(
            keys.deadletters(platform),
            {"d": job.destination, "e": row["e"], "p": row["p"], "t": row["t"], "reason": reason,
             "status": "", "excerpt": state.detail[:500], "attempts": 1, "at": job.submitted_at_ms},
        )  # fmt: skip
    pipe.hincrby(keys.state(job.destination), "dead", len(rows))
