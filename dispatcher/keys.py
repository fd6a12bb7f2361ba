"""Every Redis key name the product uses, built in one place.

All keys share a prefix so an operator can find (and a test can flush) them.
No key uses a hash tag: one enqueue touches several destinations atomically in a
single Lua call, so a Redis Cluster is not supported (a single primary with AOF is).
"""

from __future__ import annotations

PREFIX = "convdispatch"
GROUP = "delivery"  # the consumer group every destination stream is read through


def stream(destination: str) -> str:
    """Events waiting for `destination`, read through the consumer group `GROUP`."""
    return f"{PREFIX}:stream:{destination}"


def deadletters(platform: str) -> str:
    """Events a platform refused or that ran out of retries, with the reason."""
    return f"{PREFIX}:dead:{platform}"


def lease(destination: str) -> str:
    """Held by the one worker currently draining `destination`."""
    return f"{PREFIX}:lease:{destination}"


def kick(destination: str) -> str:
    """Set while a delayed drain task is queued for `destination` (debounces producers)."""
    return f"{PREFIX}:kick:{destination}"


def kick_now(destination: str) -> str:
    """Set while an immediate drain task is queued for `destination`."""
    return f"{PREFIX}:kicknow:{destination}"


def state(destination: str) -> str:
    """Hash: pause flag and reason, backoff deadline, consecutive failures, counters."""
    return f"{PREFIX}:state:{destination}"


def attempts(destination: str) -> str:
    """Hash: stream entry id -> failed delivery attempts of that event."""
    return f"{PREFIX}:attempts:{destination}"


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
