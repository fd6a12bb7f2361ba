"""The one request path for every platform call: delivery, duplicate look-up, job poll.

In order: a slot under the platform's in-flight cap, a token from every rate-limit scope,
the call with the platform's timeout, transport errors translated once, and the adapter's
reading of the answer, which never raises into the caller.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import redis

from dispatcher.destination import without_secrets
from dispatcher.errors import ConfigurationError
from dispatcher.settings import Destination, PlatformSettings
from workers.adapters import Adapter
from workers.limiter import Limit, Limiter, in_flight, with_timeout
from workers.oauth import TokenStore

log = logging.getLogger(__name__)
T = TypeVar("T")
SLOT_WAIT_S = 0.2  # how soon to look again when every in-flight slot is taken


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: the platforms' APIs authenticate by header, never by cookie."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class PlatformClient(httpx.Client):
    """The workers' HTTP client: no cookie jar (LinkedIn answers with `Set-Cookie`; reading
    each answer's cookies into a jar cost ~25 µs a call, for cookies nothing sends back)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        pass


@dataclass(frozen=True)
class Target:
    """Everything a call for one destination needs to know, resolved once per drain."""

    name: str
    destination: Destination
    table: PlatformSettings
    adapter: Adapter
    limits: list[Limit]


@dataclass(frozen=True)
class NotSent:
    """The call was not made: no slot or no token within `max_limiter_wait_s`."""

    wait_s: float


@dataclass(frozen=True)
class Failed:
    """The call was made but gave no usable answer."""

    reason: str
    maybe_sent: bool  # the platform may have taken it (timeout after connecting, unreadable)
    pause: bool = False  # a configuration problem (a token env var unset): pause, not retry


# Where a request carries its credential: `Authorization: Bearer <token>` (LinkedIn,
# Pinterest), `Authorization: OAuth <token>` (Yandex), `X-Api-Key` (vNative).
_CREDENTIAL_HEADERS = ("authorization", "x-api-key")
_DECODED = ("content-encoding", "content-length", "transfer-encoding")  # of the old body


def _without_credentials(response: httpx.Response) -> httpx.Response:
    """`response`, or a copy whose body holds *** where the platform echoed the request's
    credential (`Invalid API key <key>`): no reason, excerpt or log line built from the
    answer can then carry it."""
    headers = response.request.headers
    secrets = [headers[h].split()[-1] for h in _CREDENTIAL_HEADERS if headers.get(h, "").strip()]
    content = without_secrets(response.content, secrets)
    if content is response.content:
        return response
    kept = [(k, v) for k, v in response.headers.items() if k.lower() not in _DECODED]
    return httpx.Response(
        response.status_code, headers=kept, content=content, request=response.request
    )


class RequestPath:
    """Makes platform calls for one worker process (thread-safe: one per process)."""

    def __init__(
        self,
        client: redis.Redis,
        http: httpx.Client,
        holder: str,
        max_limiter_wait_s: float,
        sleep: Callable[[float], None],
        tokens: TokenStore | None = None,
    ) -> None:
        self.redis, self.http, self.holder = client, http, holder
        self.max_limiter_wait_s, self.sleep = max_limiter_wait_s, sleep
        self.tokens = tokens
        self._calls = itertools.count()  # next() is atomic under the GIL: thread-safe

    def wait_s(self, target: Target) -> float:
        """How long until a call for `target` could take its tokens (0: now); takes none."""
        return Limiter(self.redis, target.limits).peek()

    def call(
        self,
        target: Target,
        build: Callable[[], httpx.Request],
        read: Callable[[httpx.Response], T],
        holder: str = "",
    ) -> T | NotSent | Failed:
        """Make one call and read its answer with `read`, or say why there is none."""
        request = self._build(target, build)  # one that cannot be built takes no slot or token
        if isinstance(request, Failed):
            return request
        slots = in_flight(self.redis, target.adapter.platform, target.limits, target.table)
        holder = f"{holder or self.holder}:{next(self._calls)}"  # a slot per call, not per process
        if not slots.acquire(holder):
            return NotSent(SLOT_WAIT_S)
        try:
            limiter = Limiter(self.redis, target.limits)
            waited = self._token(limiter)
            if waited is not None:
                return waited
            response = self._send(target, request)
            if self._refreshable(target, response):
                # OAuth: a refused access token is refreshed (once, for every worker) and
                # the call is made once more with the new one, under a new rate token.
                assert isinstance(response, httpx.Response)
                assert self.tokens is not None
                used = response.request.headers.get("authorization", "").removeprefix("Bearer ")
                try:
                    self.tokens.refused(target.destination, used)
                except ConfigurationError as exc:
                    return Failed(str(exc), False, pause=True)
                waited = self._token(limiter)
                if waited is not None:
                    return waited
                request = self._build(target, build)  # with the new token
                response = request if isinstance(request, Failed) else self._send(target, request)
            if isinstance(response, Failed):
                return response
            return self._read(target, response, read)
        finally:
            slots.release(holder)

    def _token(self, limiter: Limiter) -> NotSent | None:
        """Take a rate token, sleeping for it up to `max_limiter_wait_s`; None when taken."""
        wait_s = limiter.acquire()
        while wait_s > 0:
            if wait_s > self.max_limiter_wait_s:
                return NotSent(wait_s)
            self.sleep(wait_s)
            wait_s = limiter.acquire()
        return None

    def _refreshable(self, target: Target, response: httpx.Response | Failed) -> bool:
        return (
            isinstance(response, httpx.Response)
            and response.status_code == 401
            and target.destination.oauth is not None
            and self.tokens is not None
        )

    def _build(self, target: Target, build: Callable[[], httpx.Request]) -> httpx.Request | Failed:
        try:
            return with_timeout(build(), target.table)
        except ConfigurationError as exc:
            return Failed(f"configuration: {exc}", False, pause=True)
        except Exception as exc:  # a request that cannot be built was never sent
            log.exception("%s: could not build the request", target.name)
            return Failed(f"could not build the request: {type(exc).__name__}", False)

    def _send(self, target: Target, request: httpx.Request) -> httpx.Response | Failed:
        try:
            return self.http.send(request)
        except httpx.HTTPError as exc:  # the one place transport errors are translated
            never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            url = request.url  # where, without credentials, path or query
            where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
            return Failed(
                f"{type(exc).__name__} talking to the platform at {where}", not never_sent
            )

    def _read(
        self, target: Target, response: httpx.Response, read: Callable[[httpx.Response], T]
    ) -> T | Failed:
        try:
            return read(_without_credentials(response))
        except Exception as exc:
            log.exception("%s: could not read the answer (%s)", target.name, response.status_code)
            return Failed(f"could not read the answer: {type(exc).__name__}: {exc}"[:500], True)
