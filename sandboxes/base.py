"""What every platform sandbox shares: its state (recorded calls, faults, throttling, config).

`Sandbox` is what handlers and tests share; the handlers, the control API and serving are in
`sandboxes.server`, re-exported here so platforms and tests import from one place.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import tornado.httputil

from sandboxes.server import (
    MISSING_TOKEN,
    REVOKED_TOKEN,
    THROTTLED,
    JsonHandler,
    PlatformHandler,
    RunningServer,
    application,
    serve,
)

__all__ = [
    "MISSING_TOKEN",
    "REVOKED_TOKEN",
    "THROTTLED",
    "Call",
    "Fault",
    "Json",
    "JsonHandler",
    "PlatformHandler",
    "Received",
    "RunningServer",
    "Sandbox",
    "application",
    "fingerprint",
    "serve",
]

Json = dict[str, Any]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_CONFIG: dict[str, tuple[Callable[[Any], bool], str]] = {
    "rate_limit": (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null"),
    "rate_window_s": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "latency_s": (lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    "revoked_tokens": (
        lambda v: (
            isinstance(v, list | tuple | set | frozenset) and all(isinstance(t, str) for t in v)
        ),
        "a list of strings",
    ),
    "record_bodies": (lambda v: isinstance(v, bool), "true or false"),
}


def fingerprint(token: str) -> str:
    """A short one-way digest of a token, safe to log and to hand out."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Received:
    """One accepted platform call; `events` is empty when bodies are not recorded."""

    at_s: float
    token: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    events: list[Json]
    event_ids: list[Any]
    id_field: str

    def to_json(self, summary: bool = False) -> Json:
        """The call as the control API shows it: never the raw token."""
        short = {"at_s": self.at_s, "token_fingerprint": fingerprint(self.token)}
        short["n_events"] = len(self.event_ids)
        if summary:
            return short
        rest = {"path": self.path, "query": self.query, "headers": self.headers}
        return {**short, **rest, "events": self.events, "event_ids": self.event_ids}


@dataclass(frozen=True)
class Call:
    """One platform call, whatever its outcome."""

    at_s: float
    token_fingerprint: str
    method: str
    path: str
    status: int


@dataclass(frozen=True)
class Fault:
    """How one upcoming call misbehaves; status 0 only delays it."""

    status: int
    retry_after: str | None = None
    delay_s: float = 0.0
    body: Json | None = None


class Sandbox:
    """The state of one imitated platform, shared by its handlers and by tests (thread-safe).

    Args:
        rate_limit: Calls allowed per token in any `rate_window_s`; None for unlimited.
        rate_window_s: Length of the sliding rate-limit window.
        latency_s: Delay added to every platform call.
        revoked_tokens: Bearer tokens answered with the platform's "revoked" 401.
        record_bodies: Keep whole events; when False only event counts and ids are kept.
        clock: Wall-clock seconds; tests inject a fake one to move time without sleeping.

    A platform adds config fields of its own with `add_config`; their values are in `options`.
    """

    rate_limit: int | None
    rate_window_s: float
    latency_s: float
    revoked_tokens: frozenset[str]
    record_bodies: bool

    def __init__(
        self,
        *,
        rate_limit: int | None = None,
        rate_window_s: float = 60.0,
        latency_s: float = 0.0,
        revoked_tokens: Collection[str] = (),
        record_bodies: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.on_reset: list[Callable[[], None]] = []  # platform state to forget on reset
        self.on_configure: list[Callable[[Mapping[str, Any]], None]] = []  # sees applied changes
        self.options: Json = {}  # values of the fields platforms added with `add_config`
        self._checks = dict(_CONFIG)
        self._defaults: Json = {
            **{"rate_limit": rate_limit, "rate_window_s": rate_window_s},
            **{"latency_s": latency_s, "revoked_tokens": list(revoked_tokens)},
            "record_bodies": record_bodies,
        }
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._calls: list[Call] = []
        self._faults: deque[Fault] = deque()
        self._windows: dict[str, deque[float]] = {}
        # Running totals, so `count` is O(1) however much has been recorded.
        self._n_events = 0
        self._n_calls = 0
        self.configure(self._defaults)

    def configure(self, changes: Mapping[str, Any], *, as_default: bool = False) -> None:
        """Change config fields (and, `as_default`, what `reset` restores).

        Raises:
            ValueError: A field is unknown or its value is bad; nothing has changed.
        """
        for name, value in changes.items():
            if name not in self._checks:
                raise ValueError(f"unknown config field {name!r}; known: {sorted(self._checks)}")
            if not self._checks[name][0](value):
                raise ValueError(f"{name} must be {self._checks[name][1]}")
        for name, value in changes.items():
            if name not in _CONFIG:
                self.options[name] = value
            else:
                setattr(self, name, frozenset(value) if name == "revoked_tokens" else value)
        if as_default:
            self._defaults.update(changes)
        for hook in self.on_configure:
            hook(changes)

    def add_config(self, fields: Mapping[str, tuple[Any, Callable[[Any], bool], str]]) -> None:
        """Add a platform's own config fields, set to their defaults.

        Args:
            fields: name -> (default, check of a value, what a value must be).
        """
        self._checks.update({name: (check, wants) for name, (_, check, wants) in fields.items()})
        defaults = {name: default for name, (default, _, _) in fields.items()}
        self._defaults.update(defaults)
        self.configure(defaults)

    def config(self) -> Json:
        """The current config, plus how many injected faults are still pending."""
        current = {name: getattr(self, name) for name in _CONFIG}
        current["revoked_tokens"] = sorted(self.revoked_tokens)
        with self._lock:
            return {**current, **self.options, "pending_faults": len(self._faults)}

    def reset(self, changes: Mapping[str, Any] | None = None) -> None:
        """Forget everything, restore the constructor's config, then apply `changes`."""
        self.configure({**self._defaults, **(changes or {})})
        with self._lock:
            self._received.clear()
            self._calls.clear()
            self._faults.clear()
            self._windows.clear()
            self._n_events = self._n_calls = 0
        for forget in self.on_reset:
            forget()

    def inject(
        self,
        status: int,
        count: int = 1,
        retry_after: str | int | None = None,
        delay_s: float = 0.0,
        body: Json | None = None,
    ) -> None:
        """Make the next `count` platform calls fail; faulted calls are never recorded.

        Args:
            status: HTTP status to answer; 0 means wait `delay_s`, then answer normally.
            count: How many consecutive calls get this fault.
            retry_after: Value of a `Retry-After` header to send, if any.
            delay_s: Wait this long before answering (lets clients time out).
            body: JSON body to send instead of the platform's usual error body.

        Raises:
            ValueError: An argument is out of range.
        """
        if not _is_int(status) or not (status == 0 or 200 <= status <= 599):
            raise ValueError("status must be 0 or an HTTP status from 200 to 599")
        if not _is_int(count) or count < 1:
            raise ValueError("count must be a positive integer")
        if not _is_number(delay_s) or delay_s < 0 or (status == 0 and delay_s == 0):
            raise ValueError("delay_s must be >= 0, and > 0 when status is 0")
        if body is not None and not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        after = None if retry_after is None else str(retry_after)
        with self._lock:
            self._faults.extend([Fault(status, after, float(delay_s), body)] * count)

    def next_fault(self) -> Fault | None:
        """Take the fault for the call being served, if one is queued."""
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def admit(self, token: str) -> float | None:
        """Count a call against `token`'s sliding window.

        Returns:
            None if the call is allowed, else the seconds until the window frees a slot.
        """
        limit, window_s, now_s = self.rate_limit, self.rate_window_s, self.clock()
        if limit is None:
            return None
        with self._lock:
            window = self._windows.setdefault(token, deque())
            while window and window[0] <= now_s - window_s:
                window.popleft()
            if len(window) >= limit:
                return max(0.0, window[0] + window_s - now_s)
            window.append(now_s)
        return None

    def accept(
        self,
        token: str,
        request: tornado.httputil.HTTPServerRequest,
        events: list[Json],
        id_field: str,
    ) -> Received:
        """Record an accepted call carrying `events` (already validated by the platform)."""
        headers = {name.lower(): value for name, value in request.headers.get_all()}
        if "authorization" in headers:
            headers["authorization"] = headers["authorization"].split(" ", 1)[0] + " ***"
        if "x-api-key" in headers:  # vNative's credential travels in its own header
            headers["x-api-key"] = "***"
        record = Received(
            at_s=self.clock(),
            token=token,
            path=request.path,
            query={k: v[-1].decode("utf-8", "replace") for k, v in request.query_arguments.items()},
            headers=headers,
            events=events if self.record_bodies else [],
            event_ids=[event.get(id_field) for event in events],
            id_field=id_field,
        )
        with self._lock:
            self._received.append(record)
            self._n_events += len(record.event_ids)
        return record

    def log_call(self, at_s: float, token: str, method: str, path: str, status: int) -> None:
        """Note a call of any outcome, arrived at `at_s`, in the per-request log."""
        call = Call(at_s, fingerprint(token) if token else "", method, path, status)
        with self._lock:
            self._calls.append(call)
            self._n_calls += 1

    def count(self) -> Json:
        """How many events were accepted and how many calls (any outcome) were logged, in O(1)."""
        with self._lock:
            return {"events": self._n_events, "calls": self._n_calls}

    def received(self) -> list[Received]:
        """Accepted calls, oldest first."""
        with self._lock:
            return list(self._received)

    def calls(self) -> list[Call]:
        """Every platform call, oldest first, with the status it got."""
        with self._lock:
            return list(self._calls)

    def events(self, fields: Collection[str] | None = None) -> list[Json]:
        """Accepted events in order, each cut down to `fields` when given."""
        rows: list[Json] = []
        for record in self.received():
            rows.extend(record.events or [{record.id_field: i} for i in record.event_ids])
        if fields is None:
            return rows
        return [{name: row[name] for name in fields if name in row} for row in rows]
