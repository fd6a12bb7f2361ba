"""The workers' HTTP client (unit tests: `httpx.MockTransport`, no network)."""

from __future__ import annotations

import logging

import httpx

import workers.app  # noqa: F401  (sets the httpx logger's level on import)
from workers.request import PlatformClient


def test_the_platform_client_keeps_no_cookie_and_sends_none_back() -> None:
    # Given a platform that sets a cookie on every answer (LinkedIn's API does)
    seen: list[str | None] = []

    def platform(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "lidc=abc; Path=/"}, json={})

    with PlatformClient(transport=httpx.MockTransport(platform)) as client:
        # When two calls are made, one built by the client itself
        client.send(httpx.Request("POST", "https://api.example/rest/x", content=b"{}"))
        client.post("https://api.example/rest/x", content=b"{}")
        # Then nothing was kept, and no call carried a cookie
        assert not client.cookies
        assert seen == [None, None]


def test_workers_do_not_log_a_line_per_platform_call() -> None:
    # httpx logs each request at INFO; a worker at INFO would print one line per call
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
