"""Every Redis key name the product uses, built in one place.

All keys share a prefix so an operator can find (and a test can flush) them. Every key
of one destination carries the hash tag `{<destination>}`, so a script that touches one
destination touches one Redis Cluster slot. The keys shared by several destinations
(the due index, dead letters, rate-limit scopes, the job index) are named per platform.
See docs/architecture.md for what each key holds.
"""

from __future__ import annotations

PREFIX = "convdispatch"
GROUP = "delivery"  # the consumer group every destination stream is read through


def _dest(destination: str, what: str) -> str:
    return f"{PREFIX}:{{{destination}}}:{what}"


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


def due(platform: str) -> str:
    """Sorted set: destination -> when it should be drained next (epoch ms)."""
    return f"{PREFIX}:due:{platform}"


def deadletters(platform: str) -> str:
    """Events a platform refused or that ran out of retries, with the reason."""
    return f"{PREFIX}:dead:{platform}"


def bucket(platform: str, scope: str) -> str:
    """Token bucket of one rate-limit scope (an access token, an ad account...)."""
    return f"{PREFIX}:bucket:{platform}:{scope}"


def blocked(platform: str, scope: str) -> str:
    """Epoch ms before which nobody may call the platform for this scope (after a 429)."""
    return f"{PREFIX}:blocked:{platform}:{scope}"


def in_flight(platform: str, scope: str) -> str:
    """Sorted set of calls in flight for a scope (holder -> expiry ms), for concurrency caps."""
    return f"{PREFIX}:inflight:{platform}:{scope}"


def job(platform: str, job_id: str) -> str:
    """Hash: a platform's background job (Yandex upload, vNative import) and its state."""
    return f"{PREFIX}:job:{platform}:{job_id}"


def job_events(platform: str, job_id: str) -> str:
    """List of the job's events (JSON), kept until the job finishes, to dead-letter on failure."""
    return f"{PREFIX}:jobevents:{platform}:{job_id}"


def open_jobs(platform: str) -> str:
    """Sorted set: unfinished job id -> when to look at it next (epoch ms)."""
    return f"{PREFIX}:openjobs:{platform}"


def jobs_index(platform: str) -> str:
    """Sorted set: every recorded job id -> when it was submitted (epoch ms)."""
    return f"{PREFIX}:jobs:{platform}"


def registry_destinations() -> str:
    """Hash: destination id -> JSON of a destination registered at runtime (tokens sealed)."""
    return f"{PREFIX}:registry:destinations"


def registry_routes() -> str:
    """Hash: "<event>\x1f<destination>" -> JSON of a route registered at runtime."""
    return f"{PREFIX}:registry:routes"


def registry_version() -> str:
    """Counter bumped on every registry change; processes reload when it moves."""
    return f"{PREFIX}:registry:version"


def orphans() -> str:
    """Set: destinations a worker met with events but no configuration (for metrics)."""
    return f"{PREFIX}:orphans"


def delivery_latency(platform: str) -> str:
    """Hash: histogram of enqueue-to-acceptance seconds (`le:<bound>` counts, `sum`)."""
    return f"{PREFIX}:latency:{platform}"


def drain_latency(platform: str) -> str:
    """Hash: histogram of drain durations in seconds (`le:<bound>` counts, `sum`)."""
    return f"{PREFIX}:drainlatency:{platform}"


def schedulers(platform: str) -> str:
    """Sorted set, the roll of live workers: "<pool slots>|<worker>" -> epoch ms until which
    that worker counts as consuming `platform`'s queue (renewed by its scheduler)."""
    return f"{PREFIX}:schedulers:{platform}"


def tracker(platform: str) -> str:
    """Held while a job-tracking task of `platform` is queued or running."""
    return f"{PREFIX}:tracker:{platform}"


def oauth(platform: str, fingerprint: str) -> str:
    """Hash: one OAuth grant's current access token (encrypted), its expiry, refresh count."""
    return f"{PREFIX}:oauth:{platform}:{fingerprint}"


def oauth_lock(platform: str, fingerprint: str) -> str:
    """Held by the one process refreshing this grant's access token."""
    return f"{PREFIX}:oauthlock:{platform}:{fingerprint}"


def rule_names(destination: str) -> str:
    """Hash: LinkedIn conversion rule name -> URN, written by `ensure` and rule listings."""
    return _dest(destination, "rules")
