"""What every platform sandbox shares: recorded calls, faults, throttling, control API, serving.

A platform module subclasses `PlatformHandler` for its routes and builds its app with
`application()`, which mounts the control API on the same port:

- `POST /_sandbox/faults`: `{"status", "count", "retry_after", "delay_s", "body"}`, see `inject`.
- `POST /_sandbox/reset`: forget calls, faults and platform state, restore the defaults, then
  apply the optional config fields below.
- `POST /_sandbox/config` (and `GET`): any of `rate_limit`, `rate_window_s`, `latency_s`,
  `revoked_tokens`, `record_bodies`; answers the whole config.
- `GET /_sandbox/received`: accepted calls (never the raw token); with `?summary=1` only
  `{"calls": [{at_s, token_fingerprint, n_events}], "n_calls", "total_events"}`.
- `GET /_sandbox/calls`: every platform call with its status; `GET /_sandbox/events`: accepted
  events in order, `?fields=eventId` keeping only the named top-level fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import tornado.httpserver
import tornado.httputil
import tornado.web

Json = dict[str, Any]

MISSING_TOKEN, REVOKED_TOKEN, THROTTLED = "missing_token", "revoked_token", "throttled"


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
        self.configure(self._defaults)

    def configure(self, changes: Mapping[str, Any], *, as_default: bool = False) -> None:
        """Change config fields (and, `as_default`, what `reset` restores).

        Raises:
            ValueError: A field is unknown or its value is bad; nothing has changed.
        """
        for name, value in changes.items():
            if name not in _CONFIG:
                raise ValueError(f"unknown config field {name!r}; known: {sorted(_CONFIG)}")
            if not _CONFIG[name][0](value):
                raise ValueError(f"{name} must be {_CONFIG[name][1]}")
        for name, value in changes.items():
            setattr(self, name, frozenset(value) if name == "revoked_tokens" else value)
        if as_default:
            self._defaults.update(changes)

    def config(self) -> Json:
        """The current config, plus how many injected faults are still pending."""
        current = {name: getattr(self, name) for name in _CONFIG}
        current["revoked_tokens"] = sorted(self.revoked_tokens)
        with self._lock:
            return {**current, "pending_faults": len(self._faults)}

    def reset(self, changes: Mapping[str, Any] | None = None) -> None:
        """Forget everything, restore the constructor's config, then apply `changes`."""
        self.configure({**self._defaults, **(changes or {})})
        with self._lock:
            self._received.clear()
            self._calls.clear()
            self._faults.clear()
            self._windows.clear()
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
        return record

    def log_call(self, at_s: float, token: str, method: str, path: str, status: int) -> None:
        """Note a call of any outcome, arrived at `at_s`, in the per-request log."""
        call = Call(at_s, fingerprint(token) if token else "", method, path, status)
        with self._lock:
            self._calls.append(call)

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


class JsonHandler(tornado.web.RequestHandler):
    """JSON out, errors included; the sandbox comes from the application's settings."""

    @property
    def sandbox(self) -> Sandbox:
        """The state shared by the app's handlers."""
        return cast(Sandbox, self.settings["sandbox"])

    def answer(self, status: int, body: object = None, headers: Mapping[str, str] = {}) -> None:
        """Finish with `status`, `headers` and `body` (JSON unless bytes; None for no body)."""
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        if body is not None:
            self.set_header("Content-Type", "application/json")
            self.write(body if isinstance(body, bytes) else json.dumps(body).encode())
        self.finish()

    def error_body(self, status: int, reason: str = "") -> Json:
        """The error body for `status`; platforms override it with their own format."""
        return {"status": status, "message": http.client.responses.get(status, "Error")}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.answer(status_code, self.error_body(status_code))


class PlatformHandler(JsonHandler):
    """Base of imitated endpoints: latency, faults, auth and throttling come before the route."""

    auth_scheme = "Bearer"
    id_field = "id"  # the field naming an event, kept even when bodies are not recorded
    token = ""
    arrived_s = 0.0

    def read_token(self) -> str:
        """The caller's token, or "" if there is none."""
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == self.auth_scheme.lower() else ""

    def check_request(self) -> None:
        """Platform header checks after auth and throttling; answer to refuse the call."""

    def refuse(self, status: int, reason: str, headers: Mapping[str, str] = {}) -> None:
        """Answer with the platform's error body for `status` and `reason`."""
        self.answer(status, self.error_body(status, reason), headers)

    async def prepare(self) -> None:
        self.token, sandbox = self.read_token(), self.sandbox
        self.arrived_s = sandbox.clock()
        if sandbox.latency_s:
            await asyncio.sleep(sandbox.latency_s)
        fault = sandbox.next_fault()
        if fault is not None:
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.status:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                body = fault.body if fault.body is not None else self.error_body(fault.status)
                self.answer(fault.status, body, headers)
                return
        if not self.token:
            self.refuse(401, MISSING_TOKEN)
        elif self.token in sandbox.revoked_tokens:
            self.refuse(401, REVOKED_TOKEN)
        elif sandbox.admit(self.token) is not None:
            self.refuse(429, THROTTLED)
        else:
            self.check_request()

    def on_finish(self) -> None:
        method, path = self.request.method or "", self.request.path
        self.sandbox.log_call(self.arrived_s, self.token, method, path, self.get_status())


class _Control(JsonHandler):
    """The `/_sandbox/<name>` endpoints described in the module docstring."""

    def get(self, name: str) -> None:
        sandbox = self.sandbox
        body: object = None
        if name == "config":
            body = sandbox.config()
        elif name == "calls":
            body = [asdict(call) for call in sandbox.calls()]
        elif name == "events":
            names = [n for arg in self.get_query_arguments("fields") for n in arg.split(",") if n]
            body = sandbox.events(names or None)
        elif name == "received":
            records = sandbox.received()
            if self.get_query_argument("summary", "0").lower() in ("1", "true"):
                rows = [record.to_json(summary=True) for record in records]
                total = sum(row["n_events"] for row in rows)
                body = {"calls": rows, "n_calls": len(rows), "total_events": total}
            else:
                body = [record.to_json() for record in records]
        if body is None:
            raise tornado.web.HTTPError(404)
        self.answer(200, body)

    def post(self, name: str) -> None:
        sandbox = self.sandbox
        actions: dict[str, Callable[[Json], object]] = {
            "faults": lambda changes: sandbox.inject(**changes),
            "reset": sandbox.reset,
            "config": sandbox.configure,
        }
        if name not in actions:
            raise tornado.web.HTTPError(404)
        try:
            changes = json.loads(self.request.body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            actions[name](changes)
        except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            self.answer(400, {"status": 400, "message": str(exc)})
            return
        self.answer(200, sandbox.config())


class _NotFound(JsonHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


def application(
    sandbox: Sandbox,
    routes: Sequence[tuple[str, type[tornado.web.RequestHandler]]],
    **settings: Any,
) -> tornado.web.Application:
    """A tornado app serving a platform's `routes` and the control API over one `sandbox`."""
    return tornado.web.Application(
        [(r"/_sandbox/(\w+)", _Control), *routes],
        sandbox=sandbox,
        default_handler_class=_NotFound,
        **settings,
    )


class RunningServer:
    """A sandbox app served on its own event loop in a background thread (see `serve`)."""

    def __init__(self, app: tornado.web.Application, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        # Bound here, not in the thread, so "address in use" reaches the caller; unlike
        # tornado's bind_sockets, create_server closes the socket when binding fails.
        self._socket = socket.create_server((host, port))
        self._socket.setblocking(False)
        self.host, self.port = host, int(self._socket.getsockname()[1])
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name=f"sandbox-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def sandbox(self) -> Sandbox:
        """The app's shared state."""
        return cast(Sandbox, self.app.settings["sandbox"])

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._stopping is None:
            raise RuntimeError(f"sandbox server on {self.url} did not start")

    def wait(self) -> None:
        """Block until the server stops; Ctrl-C interrupts it."""
        while self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and close every connection; calling it again does nothing."""
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout_s)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            server = tornado.httpserver.HTTPServer(self.app)
            server.add_sockets([self._socket])
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        finally:
            self._ready.set()
        await self._stopping.wait()
        server.stop()
        await server.close_all_connections()


def serve(
    app_factory: Callable[[], tornado.web.Application], host: str = "127.0.0.1", port: int = 0
) -> RunningServer:
    """Serve a sandbox app in a background thread, e.g. from a pytest fixture.

    Args:
        app_factory: Builds the app, e.g. `linkedin.make_app`.
        host: Interface to listen on.
        port: TCP port; 0 picks a free one (read it back from `.port` or `.url`).

    Returns:
        The running server; call `.stop()` when done.
    """
    server = RunningServer(app_factory(), host, port)
    server.start()
    return server
