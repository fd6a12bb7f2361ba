"""Redis connections, the Lua scripts shipped beside the code, and error translation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any

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


@cache
def _sha(package: str, name: str) -> str:
    return hashlib.sha1(lua(package, name).encode(), usedforsecurity=False).hexdigest()


Call = tuple[Sequence[Any], Sequence[Any]]  # one script call's keys and arguments


def run(client: redis.Redis, package: str, name: str, keys: Sequence[Any], *args: Any) -> Any:
    """Run a shipped script by its SHA-1 (EVALSHA): its text goes to Redis only when Redis
    does not know it yet (first use, or a restart), and then by EVAL, which also loads it."""
    try:
        return client.evalsha(_sha(package, name), len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return client.eval(lua(package, name), len(keys), *keys, *args)


def run_all(client: redis.Redis, package: str, name: str, calls: Sequence[Call]) -> list[Any]:
    """`run` for many calls of one script in one pipelined round trip (non-transactional);
    each reply or error in call order. A call answered NOSCRIPT did not run: it runs again
    by EVAL."""
    pipe = _pipeline(client, package, name, calls, by_sha=True)
    replies = list(pipe.execute(raise_on_error=False))
    missing = _noscript(replies)
    if missing:
        again = _pipeline(client, package, name, [calls[i] for i in missing], by_sha=False)
        _splice(replies, missing, again.execute(raise_on_error=False))
    return replies


async def arun_all(
    client: redis.asyncio.Redis, package: str, name: str, calls: Sequence[Call]
) -> list[Any]:
    """The asyncio twin of `run_all`."""
    pipe = _pipeline(client, package, name, calls, by_sha=True)
    replies = list(await pipe.execute(raise_on_error=False))
    missing = _noscript(replies)
    if missing:
        again = _pipeline(client, package, name, [calls[i] for i in missing], by_sha=False)
        _splice(replies, missing, await again.execute(raise_on_error=False))
    return replies


def _pipeline(client: Any, package: str, name: str, calls: Sequence[Call], by_sha: bool) -> Any:
    """A pipeline (sync or asyncio) with each call queued by EVALSHA, or by EVAL."""
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        if by_sha:
            pipe.evalsha(_sha(package, name), len(keys), *keys, *args)
        else:
            pipe.eval(lua(package, name), len(keys), *keys, *args)
    return pipe


def _noscript(replies: list[Any]) -> list[int]:
    return [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]


def _splice(replies: list[Any], at: list[int], again: list[Any]) -> None:
    for i, reply in zip(at, again, strict=True):
        replies[i] = reply


@contextmanager
def translate_redis_errors() -> Iterator[None]:
    """Turn any redis-py exception into `StorageError` (the one boundary that does so)."""
    try:
        yield
    except redis.RedisError as exc:
        raise StorageError(f"redis: {type(exc).__name__}: {exc}") from exc
