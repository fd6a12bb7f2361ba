"""Every Redis key name the product uses, built in one place.

All keys share a prefix so an operator can find (and a test can flush) them. There are
two layouts, one per installation (`configure`, called when a process opens its event
store; see docs/architecture.md, "Redis Cluster"):

- single node (the default): every key of one destination carries the hash tag
  `{<destination>}`; the keys shared by the destinations of a platform (the due index,
  dead letters, the job records and indexes, the latency histograms) are one per platform.
- sharded (`keyspace_shards`, for Redis Cluster): a destination belongs to the shard
  `crc32(id) % shards`, and its keys and the per-platform keys its scripts write all carry
  the tag `{s<shard>}`, so every script touches one slot and the due index is one sorted
  set per platform and shard. Rate-limit scopes carry `{limits:<platform>}` (the scopes of
  one call are taken together), the registry `{registry}`.
"""

from __future__ import annotations

import zlib

PREFIX = "convdispatch"
GROUP = "delivery"  # the consumer group every destination stream is read through

_shards: int | None = None  # None: the single-node layout


def configure(shards: int | None) -> None:
    """Choose this process's layout: None for a single node, else the number of shards."""
    global _shards
    if shards is not None and not 1 <= shards <= 16384:
        raise ValueError(f"keyspace_shards must be 1..16384, got {shards}")
    _shards = shards


def sharded() -> bool:
    """Whether keys carry shard tags (the Redis Cluster layout)."""
    return _shards is not None


def shards() -> range:
    """Every shard number: readers of the per-platform keys visit each."""
    return range(_shards or 1)


def shard(destination: str) -> int:
    """The shard `destination`'s keys live in (always 0 on a single node)."""
    return 0 if _shards is None else zlib.crc32(destination.encode()) % _shards


def _dest(destination: str, what: str) -> str:
    if _shards is None:
        return f"{PREFIX}:{{{destination}}}:{what}"
    return f"{PREFIX}:{{s{shard(destination)}}}:{destination}:{what}"


def _per_platform(what: str, platform: str, shard: int) -> str:
    if _shards is None:
        return f"{PREFIX}:{what}:{platform}"
    return f"{PREFIX}:{{s{shard}}}:{what}:{platform}"


def _tagged(tag: str, rest: str) -> str:
    return f"{PREFIX}:{rest}" if _shards is None else f"{PREFIX}:{{{tag}}}:{rest}"


def streams_pattern() -> str:
    """A SCAN pattern matching every destination's stream."""
    return f"{PREFIX}:{{*}}:stream" if _shards is None else f"{PREFIX}:{{s*}}:*:stream"


def destination_of(stream_key: str) -> str:
    """The destination a stream key (as `streams_pattern` finds them) belongs to."""
    middle = stream_key[len(PREFIX) + 1 : -len(":stream")]
    return middle[1:-1] if _shards is None else middle.split("}:", 1)[1]


def stream(destination: str) -> str:
    """Events waiting for `destination`, read through the consumer group `GROUP`."""
    return _dest(destination, "stream")


def state(destination: str) -> str:
    """Hash: pause flag and reason, backoff deadline, consecutive failures, counters."""
    return _dest(destination, "state")


def attempts(destination: str) -> str:
    """Hash: stream entry id -> counted failed delivery attempts of that event."""
    return _dest(destination, "attempts")


def event_ids(destination: str) -> str:
    """Sorted set: event id -> its entry id (ms * 4096 + seq), for `idempotency_window_s`."""
    return _dest(destination, "ids")


def deliveries(destination: str) -> str:
    """Stream: one record per delivered batch (batch id, status, job, entry-id runs), kept
    `idempotency_window_s`, so `trace` can say which call delivered an event."""
    return _dest(destination, "deliveries")


def lease(destination: str) -> str:
    """The fencing token of the one drain currently holding `destination`."""
    return _dest(destination, "lease")


def sending(destination: str) -> str:
    """Hash: batch id -> JSON {ids, at} of batches whose outcome is not known yet."""
    return _dest(destination, "sending")


def due(platform: str, shard: int = 0) -> str:
    """Sorted set: destination -> when it should be drained next (epoch ms)."""
    return _per_platform("due", platform, shard)


def deadletters(platform: str, shard: int = 0) -> str:
    """Events a platform refused or that ran out of retries, with the reason."""
    return _per_platform("dead", platform, shard)


def bucket(platform: str, scope: str) -> str:
    """Token bucket of one rate-limit scope (an access token, an ad account...)."""
    return _tagged(f"limits:{platform}", f"bucket:{platform}:{scope}")


def blocked(platform: str, scope: str) -> str:
    """Epoch ms before which nobody may call the platform for this scope (after a 429)."""
    return _tagged(f"limits:{platform}", f"blocked:{platform}:{scope}")


def in_flight(platform: str, scope: str) -> str:
    """Sorted set of calls in flight for a scope (holder -> expiry ms), for concurrency caps."""
    return _tagged(f"limits:{platform}", f"inflight:{platform}:{scope}")


def job(platform: str, job_id: str, shard: int = 0) -> str:
    """Hash: a platform's background job (Yandex upload, vNative import) and its state."""
    return _per_platform("job", f"{platform}:{job_id}", shard)


def job_events(platform: str, job_id: str, shard: int = 0) -> str:
    """List of the job's events (JSON), kept until the job finishes, to dead-letter on failure."""
    return _per_platform("jobevents", f"{platform}:{job_id}", shard)


def open_jobs(platform: str, shard: int = 0) -> str:
    """Sorted set: unfinished job id -> when to look at it next (epoch ms)."""
    return _per_platform("openjobs", platform, shard)


def jobs_index(platform: str, shard: int = 0) -> str:
    """Sorted set: every recorded job id -> when it was submitted (epoch ms)."""
    return _per_platform("jobs", platform, shard)


def registry_destinations() -> str:
    """Hash: destination id -> JSON of a destination registered at runtime (tokens sealed)."""
    return _tagged("registry", "registry:destinations")


def registry_routes() -> str:
    """Hash: "<event>\x1f<destination>" -> JSON of a route registered at runtime."""
    return _tagged("registry", "registry:routes")


def registry_version() -> str:
    """Counter bumped on every registry change; processes reload when it moves."""
    return _tagged("registry", "registry:version")


def orphans() -> str:
    """Set: destinations a worker met with events but no configuration (for metrics)."""
    return f"{PREFIX}:orphans"


def delivery_latency(platform: str, shard: int = 0) -> str:
    """Hash: histogram of enqueue-to-acceptance seconds (`le:<bound>` counts, `sum`)."""
    return _per_platform("latency", platform, shard)


def drain_latency(platform: str, shard: int = 0) -> str:
    """Hash: histogram of drain durations in seconds (`le:<bound>` counts, `sum`)."""
    return _per_platform("drainlatency", platform, shard)


def schedulers(platform: str, shard: int = 0) -> str:
    """Sorted set, the roll of live workers: "<pool slots>|<worker>" -> epoch ms until which
    that worker counts as consuming `platform`'s queue (renewed by its scheduler)."""
    return _per_platform("schedulers", platform, shard)


def tracker(platform: str, shard: int = 0) -> str:
    """Held while a job-tracking task of `platform` is queued or running."""
    return _per_platform("tracker", platform, shard)


def oauth(platform: str, fingerprint: str) -> str:
    """Hash: one OAuth grant's current access token (encrypted), when to refresh it, the
    refresh count and when the refresh token ends (`OAUTH_REFRESH_EXPIRES_AT`, epoch s)."""
    return f"{PREFIX}:oauth:{platform}:{fingerprint}"


OAUTH_REFRESH_EXPIRES_AT = "refresh_expires_at"


def oauth_lock(platform: str, fingerprint: str) -> str:
    """Held by the one process refreshing this grant's access token."""
    return f"{PREFIX}:oauthlock:{platform}:{fingerprint}"


def rule_names(destination: str) -> str:
    """Hash: LinkedIn conversion rule name -> URN, written by `ensure` and rule listings."""
    return _dest(destination, "rules")
