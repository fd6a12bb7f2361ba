"""Redis connections, the Lua scripts shipped beside the code, and error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources

import redis
import redis.asyncio

from dispatcher.errors import StorageError


def connect(url: str) -> redis.Redis:
    """A synchronous client; responses stay bytes so payloads are never re-encoded."""
    return redis.Redis.from_url(url, socket_timeout=30, health_check_interval=30)


def aconnect(url: str) -> redis.asyncio.Redis:
    """The asyncio twin of `connect`."""
    return redis.asyncio.Redis.from_url(url, socket_timeout=30, health_check_interval=30)


@cache
def lua(package: str, name: str) -> str:
    """The text of a Lua script shipped as package data next to its Python user."""
    return resources.files(package).joinpath(name).read_text()


@contextmanager
def translate_redis_errors() -> Iterator[None]:
    """Turn any redis-py exception into `StorageError` (the one boundary that does so)."""
    try:
        yield
    except redis.RedisError as exc:
        raise StorageError(f"redis: {type(exc).__name__}: {exc}") from exc
