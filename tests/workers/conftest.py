"""Fixtures for the sandbox tests: each module provides `server`, a running sandbox.

Also what several sandbox modules share: the token they send, a clock a test moves
forward, and LinkedIn's request headers and clocked sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from dispatcher.settings import LINKEDIN_VERSION
from sandboxes import linkedin
from sandboxes.base import RunningServer, Sandbox, serve

TOKEN = "token-main"


class Clock:
    """Wall-clock seconds that a test moves forward instead of sleeping."""

    def __init__(self) -> None:
        self.now_s = time.time()

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    """An HTTP client on the module's sandbox, reset to its defaults first."""
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        http.post("/_sandbox/reset").raise_for_status()
        yield http


def serve_linkedin(clock: Clock) -> Iterator[RunningServer]:
    """Run a LinkedIn sandbox whose rate window and token expiry follow `clock`."""
    sandbox = Sandbox(rate_limit=linkedin.RATE_LIMIT, rate_window_s=60.0, clock=clock)
    running = serve(lambda: linkedin.make_app(sandbox))
    yield running
    running.stop()


def linkedin_headers(method: str | None = None, token: str | None = TOKEN) -> dict[str, str]:
    """LinkedIn's REST headers, with X-RestLi-Method `method` and a Bearer `token` if given."""
    sent = {
        "LinkedIn-Version": LINKEDIN_VERSION,
        "X-Restli-Protocol-Version": "2.0.0",
        "Content-Type": "application/json",
    }
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if method is not None:
        sent["X-RestLi-Method"] = method
    return sent
