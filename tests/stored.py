"""Everything a Redis holds, as text: for tests that assert a value is nowhere in it."""

from __future__ import annotations

import redis


def stored_text(client: redis.Redis) -> str:
    """Every key, field, member and value of every key, whatever its type."""
    parts: list[bytes] = []
    for key in client.scan_iter("*"):
        kind = client.type(key)
        parts.append(bytes(key))
        if kind == b"stream":
            for _, fields in client.xrange(key):
                parts += [bytes(k) + bytes(v) for k, v in fields.items()]
        elif kind == b"hash":
            parts += [bytes(k) + bytes(v) for k, v in client.hgetall(key).items()]
        elif kind == b"zset":
            parts += [bytes(m) for m in client.zrange(key, 0, -1)]
        elif kind == b"set":
            parts += [bytes(m) for m in client.smembers(key)]
        elif kind == b"list":
            parts += [bytes(v) for v in client.lrange(key, 0, -1)]
        elif kind == b"string":
            parts.append(bytes(client.get(key) or b""))
    return b"\n".join(parts).decode(errors="replace")
