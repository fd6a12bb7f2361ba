"""Serving a platform sandbox: the handlers' shared steps, the control API and the server.

A platform module subclasses `PlatformHandler` for its routes and builds its app with
`application()`, which mounts the control API on the same port:

- `POST /_sandbox/faults`: `{"status", "count", "retry_after", "delay_s", "body"}`, see
  `Sandbox.inject`.
- `POST /_sandbox/reset`: forget calls, faults and platform state, restore the defaults, then
  apply the optional config fields below.
- `POST /_sandbox/config` (and `GET`): any of `rate_limit`, `rate_window_s`, `latency_s`,
  `revoked_tokens`, `record_bodies`; answers the whole config.
- `GET /_sandbox/received`: accepted calls (never the raw token); with `?summary=1` only
  `{"calls": [{at_s, token_fingerprint, n_events}], "n_calls", "total_events"}`.
- `GET /_sandbox/calls`: every platform call with its status; `GET /_sandbox/events`: accepted
  events in order, `?fields=eventId` keeping only the named top-level fields.
- `GET /_sandbox/count`: `{"events": <events accepted>, "calls": <platform calls of any
  outcome, as in /calls>}`, from running totals: cheap to poll however much was recorded.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

import tornado.httpserver
import tornado.web

if TYPE_CHECKING:
    # Types only: `base` re-exports this module's names, so a runtime import would be a cycle.
    from sandboxes.base import Json, Sandbox

MISSING_TOKEN, REVOKED_TOKEN, THROTTLED = "missing_token", "revoked_token", "throttled"


class JsonHandler(tornado.web.RequestHandler):
    """JSON out, errors included; the sandbox comes from the application's settings."""

    @property
    def sandbox(self) -> Sandbox:
        """The state shared by the app's handlers."""
        return cast("Sandbox", self.settings["sandbox"])

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
    """Base of imitated endpoints: latency, faults, auth and throttling come before the route.

    Platforms adjust those steps through `read_token`, `check_target`, `rate_key`,
    `check_request` and `error_body`.
    """

    auth_scheme = "Bearer"
    id_field = "id"  # the field naming an event, kept even when bodies are not recorded
    token = ""
    arrived_s = 0.0

    def read_token(self) -> str:
        """The caller's token, or "" if there is none."""
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == self.auth_scheme.lower() else ""

    def check_target(self) -> tuple[int, Json] | None:
        """Platform checks of what the call addresses (e.g. an account in its path).

        Made after auth and before throttling, so a call refused here uses no rate slot.

        Returns:
            (status, body) to refuse the call with, or None to let it through.
        """
        return None

    def rate_key(self) -> str:
        """What the throttle counts calls against: the token, unless the platform says otherwise."""
        return self.token

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
        elif (refusal := self.check_target()) is not None:
            self.answer(*refusal)
        elif sandbox.admit(self.rate_key()) is not None:
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
        elif name == "count":
            body = sandbox.count()
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
        return cast("Sandbox", self.app.settings["sandbox"])

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
