"""Where is an event? Waiting, in flight, delivered (by which call) or dead (why).

Within `idempotency_window_s` (1 day by default) every stored event id maps to its
stream entry id (`keys.event_ids`). From there: the entry still in the stream is waiting
or, if a drain holds it, in flight; an entry gone from the stream is in a delivery
record (`keys.deliveries`: one per delivered batch, with its entry-id runs, its HTTP
status and platform job) or in the platform's dead letters. Older events are unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from dispatcher import keys
from dispatcher.deadletters import letter_id
from dispatcher.settings import Settings

SEQ_BITS = 4096  # the ids score is entry ms * 4096 + min(seq, 4095)
SCAN_PAGE = 1000
MAX_SCAN = 200_000  # entries looked through for a dead letter or a delivery record


@dataclass(frozen=True)
class Trace:
    """What became of one event at one destination."""

    destination: str
    state: str  # waiting | in flight | delivered | dead | unknown
    detail: str  # one sentence for a person
    stored_at_ms: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # batch, job, status, attempts...


def trace(
    client: redis.Redis, settings: Settings, event_id: str, destination: str | None = None
) -> list[Trace]:
    """The event's state at `destination`, or at every destination that stored it."""
    names = [destination] if destination else sorted(settings.destinations)
    found = []
    for name in names:
        score = client.zscore(keys.event_ids(name), event_id)
        if score is not None:
            platform = settings.destination(name).platform
            found.append(_one(client, name, platform, event_id, int(score)))
    if not found:
        window = f"{settings.idempotency_window_s / 3600:g} h"
        where = destination or "any destination"
        detail = f"not stored at {where} within the trace window ({window}), or never"
        found.append(Trace(destination or "*", "unknown", detail))
    return found


def _one(client: redis.Redis, name: str, platform: str, event_id: str, score: int) -> Trace:
    ms, seq = divmod(score, SEQ_BITS)
    exact = seq < SEQ_BITS - 1
    entry = _entry(client, name, event_id, ms, seq, exact)
    if entry is not None:
        return _in_stream(client, name, platform, entry, ms)
    dead = _dead(client, name, platform, event_id, ms)
    if dead is not None:
        return dead
    return _delivered(client, name, ms, seq, exact)


def _entry(
    client: redis.Redis, name: str, event_id: str, ms: int, seq: int, exact: bool
) -> str | None:
    stream = keys.stream(name)
    if exact:
        rows = cast(list[Any], client.xrange(stream, f"{ms}-{seq}", f"{ms}-{seq}"))
        return rows[0][0].decode() if rows and rows[0][1].get(b"e") == event_id.encode() else None
    start = f"{ms}-{seq}"
    while True:  # a sequence past 4095 in one ms: look through that ms
        rows = cast(list[Any], client.xrange(stream, start, f"{ms}-18446744073709551615", 1000))
        for entry_id, fields in rows:
            if fields.get(b"e") == event_id.encode():
                return cast(str, entry_id.decode())
        if len(rows) < 1000:
            return None
        start = "(" + rows[-1][0].decode()


def _in_stream(client: redis.Redis, name: str, platform: str, entry: str, ms: int) -> Trace:
    pending = cast(
        list[dict[str, Any]], client.xpending_range(keys.stream(name), keys.GROUP, entry, entry, 1)
    )
    attempts = int(cast(bytes | None, client.hget(keys.attempts(name), entry)) or 0)
    state = cast(dict[bytes, bytes], client.hgetall(keys.state(name)))
    facts: dict[str, Any] = {"entry": entry, "attempts": attempts}
    if state.get(b"last_error"):
        facts["last_error"] = state[b"last_error"].decode()
    if pending:
        p = pending[0]
        consumer = p["consumer"].decode() if isinstance(p["consumer"], bytes) else p["consumer"]
        facts |= {"consumer": consumer, "idle_s": int(p["time_since_delivered"]) / 1000,
                  "deliveries": int(p["times_delivered"])}  # fmt: skip
        detail = (
            f"in flight: taken by {consumer} {int(p['time_since_delivered']) / 1000:.1f} s ago "
            f"(delivery {p['times_delivered']}, {attempts} failed attempt(s) counted)"
        )
        return Trace(name, "in flight", detail, ms, facts)
    due = client.zscore(keys.due(platform, keys.shard(name)), name)
    if state.get(b"paused"):
        detail = f"waiting: the destination is paused ({state.get(b'pause_reason', b'').decode()})"
    else:
        when = "not scheduled" if due is None else f"due {iso(int(due))}" if due else "due now"
        detail = f"waiting since {iso(ms)} ({when}, {attempts} failed attempt(s) counted)"
    if due is not None:
        facts["due_ms"] = int(due)
    return Trace(name, "waiting", detail, ms, facts)


def _dead(client: redis.Redis, name: str, platform: str, event_id: str, ms: int) -> Trace | None:
    start, seen = f"{ms}-0", 0
    stream = keys.deadletters(platform, keys.shard(name))
    shard = keys.shard(name) if keys.sharded() else None
    while seen < MAX_SCAN:
        rows = cast(list[Any], client.xrange(stream, start, "+", SCAN_PAGE))
        for entry, f in rows:
            if f.get(b"e") == event_id.encode() and f.get(b"d") == name.encode():
                reason = f.get(b"reason", b"").decode()
                found = letter_id(entry.decode(), shard)
                facts = {"dead_letter": found, "reason": reason,
                         "status": f.get(b"status", b"").decode(),
                         "attempts": int(f.get(b"attempts", b"0") or 0)}  # fmt: skip
                detail = f"dead: {reason} (dead letter {found})"
                return Trace(name, "dead", detail, ms, facts)
        seen += len(rows)
        if len(rows) < SCAN_PAGE:
            return None
        start = "(" + rows[-1][0].decode()
    return None


def _delivered(client: redis.Redis, name: str, ms: int, seq: int, exact: bool) -> Trace:
    start, seen = f"{ms}-0", 0
    candidates: list[tuple[str, dict[bytes, bytes]]] = []
    while seen < MAX_SCAN:
        rows = cast(list[Any], client.xrange(keys.deliveries(name), start, "+", SCAN_PAGE))
        for record_id, f in rows:
            if _covers(f.get(b"r", b"").decode(), ms, seq, exact):
                candidates.append((record_id.decode(), f))
        seen += len(rows)
        if len(rows) < SCAN_PAGE or (candidates and exact):
            break
        start = "(" + rows[-1][0].decode()
    if not candidates:
        detail = "gone from the stream with no delivery record (moved as an orphan, or trimmed)"
        return Trace(name, "unknown", detail, ms)
    record_id, f = candidates[0]
    text = {k.decode(): v.decode() for k, v in f.items() if k != b"r"}
    at_ms = int(record_id.split("-")[0])
    facts: dict[str, Any] = {"batch": text.get("b", ""), "delivered_at_ms": at_ms,
                             "status": text.get("s", ""), "job": text.get("j", ""),
                             "batch_events": int(text.get("n", 0))}  # fmt: skip
    job = f", platform job {text['j']}" if text.get("j") else ""
    detail = (
        f"delivered {iso(at_ms)} in batch {text.get('b') or '?'} of {text.get('n')} events "
        f"(HTTP {text.get('s') or '?'}{job})"
    )
    if len(candidates) > 1:
        facts["other_batches"] = [c[1].get(b"b", b"").decode() for c in candidates[1:]]
        detail += f"; or one of {len(candidates) - 1} other batch(es) of the same millisecond"
    return Trace(name, "delivered", detail, ms, facts)


def iso(ms: int) -> str:
    """Epoch ms as a UTC time a person reads."""
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC"


def _covers(runs: str, ms: int, seq: int, exact: bool) -> bool:
    for run in runs.split():
        run_ms, first, last = (int(x) for x in run.split("-"))
        if run_ms == ms and (first <= seq <= last or (not exact and last >= seq)):
            return True
    return False
