"""The synchronous client's command packer: byte for byte what redis-py would send."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis

from dispatcher.storage import Packer, connect


def redis_py(*args: Any) -> list[bytes]:
    """What redis-py's own packer sends."""
    packed: list[bytes] = cast(Any, redis.Connection)().pack_command(*args)
    return packed


PLAIN: list[tuple[Any, ...]] = [
    ("SET", "k", "v"),
    ("EVALSHA", "a" * 40, 2, "k1", b"k2", b"\x00\x01payload", "é", 0, -1, 2**70),
    ("XADD", b"s", "*", "p", b""),
]
OTHER: list[tuple[Any, ...]] = [
    ("INCRBYFLOAT", "k", 0.1),  # a float: redis-py writes repr()
    ("CONFIG GET", "maxmemory"),  # a command name of two words
    (b"SET", "k", "v"),
    ("SET", "k", memoryview(b"v")),
]


@pytest.mark.parametrize("args", PLAIN + OTHER)
def test_the_packer_sends_what_redis_py_sends(args: tuple[Any, ...]) -> None:
    ours, theirs = Packer().pack(*args), redis_py(*args)
    assert b"".join(map(bytes, ours)) == b"".join(map(bytes, theirs))


@pytest.mark.parametrize("args", PLAIN)
def test_plain_commands_skip_redis_pys_python_encoding(args: tuple[Any, ...]) -> None:
    packer = Packer()

    def fallback(*_: Any) -> list[bytes]:
        raise AssertionError("packed by redis-py")

    packer._redis_py = fallback
    assert len(packer.pack(*args)) == 1


@pytest.mark.parametrize("bad", [True, None, 1.5j, object(), "\ud800"])
def test_the_packer_refuses_what_redis_py_refuses(bad: object) -> None:
    with pytest.raises((redis.DataError, UnicodeError)) as theirs:
        redis_py("SET", "k", bad)
    with pytest.raises(theirs.type, match=str(theirs.value)[:20]):
        Packer().pack("SET", "k", bad)


def test_the_client_uses_it(redis_url: str) -> None:
    client = connect(redis_url)
    client.set("packer-test", 1)
    assert client.get("packer-test") == b"1"
    connection = client.connection_pool.get_connection()
    try:
        assert isinstance(connection._command_packer, Packer)
    finally:
        client.connection_pool.release(connection)
        client.delete("packer-test")
