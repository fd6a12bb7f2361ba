"""Fixtures for the sandbox tests: each module provides `server`, a running sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandboxes.base import RunningServer


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    """An HTTP client on the module's sandbox, reset to its defaults first."""
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        http.post("/_sandbox/reset").raise_for_status()
        yield http
