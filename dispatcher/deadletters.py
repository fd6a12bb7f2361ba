"""Dead letters: events a platform refused or that ran out of retries, kept with the reason.

One Redis stream per platform. Entries hold the event exactly as it would be sent
(already hashed), so replaying one is a plain re-enqueue with the same event id.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from dispatcher import keys
from dispatcher.client import Dispatcher, Plan
from dispatcher.storage import translate_redis_errors

_SCAN_PAGE = 1000


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered event and why it is there."""

    id: str
    destination: str
    event_id: str
    reason: str
    status: int | None
    excerpt: str
    attempts: int
    failed_at_ms: int
    happened_at_ms: int
    payload: bytes

    @property
    def event(self) -> dict[str, Any]:
        """The (hashed) event as the platform would receive it."""
        loaded: dict[str, Any] = json.loads(self.payload)
        return loaded

    @classmethod
    def from_entry(cls, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
        """Decode one stream entry."""
        text = {k.decode(): v.decode() for k, v in fields.items() if k != b"p"}
        status = text.get("status", "")
        return cls(
            id=entry_id.decode(),
            destination=text["d"],
            event_id=text["e"],
            reason=text["reason"],
            status=int(status) if status else None,
            excerpt=text.get("excerpt", ""),
            attempts=int(text.get("attempts", "0")),
            failed_at_ms=int(text.get("at", "0")),
            happened_at_ms=int(text.get("t", "0")),
            payload=fields[b"p"],
        )


class DeadLetters:
    """List, replay and purge a platform's dead letters."""

    def __init__(self, dispatcher: Dispatcher | None = None) -> None:
        self.dispatcher = dispatcher or Dispatcher()

    def _redis(self) -> redis.Redis:
        return self.dispatcher.redis

    def count(self, platform: str) -> int:
        """How many dead letters the platform holds."""
        with translate_redis_errors():
            return int(self._redis().xlen(keys.deadletters(platform)))

    def iter(self, platform: str, destination: str | None = None) -> Iterator[DeadLetter]:
        """Every dead letter of a platform, oldest first, optionally for one destination."""
        start = "-"
        while True:
            with translate_redis_errors():
                page = cast(
                    "builtins.list[tuple[bytes, dict[bytes, bytes]]]",
                    self._redis().xrange(keys.deadletters(platform), start, "+", _SCAN_PAGE),
                )
            for entry_id, fields in page:
                letter = DeadLetter.from_entry(entry_id, fields)
                if destination is None or letter.destination == destination:
                    yield letter
            if len(page) < _SCAN_PAGE:
                return
            start = "(" + page[-1][0].decode()

    def list(
        self, platform: str, destination: str | None = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """Up to `limit` dead letters, oldest first."""
        out: builtins.list[DeadLetter] = []
        for letter in self.iter(platform, destination):
            if len(out) >= limit:
                break
            out.append(letter)
        return out

    def _select(
        self, platform: str, ids: Sequence[str] | None, destination: str | None
    ) -> builtins.list[DeadLetter]:
        wanted = set(ids) if ids is not None else None
        return [
            letter
            for letter in self.iter(platform, destination)
            if wanted is None or letter.id in wanted
        ]

    def replay(
        self, platform: str, ids: Sequence[str] | None = None, destination: str | None = None
    ) -> int:
        """Put dead letters back on their destinations' streams; returns how many.

        The events keep their event ids, so a platform that already counted one
        deduplicates it. An entry leaves the dead-letter stream only after it is back on
        its destination stream (a crash in between leaves a duplicate, never a loss).
        """
        letters = self._select(platform, ids, destination)
        for chunk_start in range(0, len(letters), 5000):
            chunk = letters[chunk_start : chunk_start + 5000]
            groups: dict[str, list[tuple[str, bytes, int]]] = {}
            for letter in chunk:
                self.dispatcher.settings.destination(letter.destination)
                groups.setdefault(letter.destination, []).append(
                    (letter.event_id, letter.payload, letter.happened_at_ms)
                )
            self.dispatcher.store(Plan(groups=groups), dedup=False)  # same ids, on purpose
            with translate_redis_errors():
                self._redis().xdel(keys.deadletters(platform), *[x.id for x in chunk])
        return len(letters)

    def purge(
        self, platform: str, ids: Sequence[str] | None = None, destination: str | None = None
    ) -> int:
        """Delete dead letters for good; returns how many were deleted."""
        if ids is None and destination is None:
            with translate_redis_errors():
                n = self.count(platform)
                self._redis().delete(keys.deadletters(platform))
            return n
        letters = self._select(platform, ids, destination)
        with translate_redis_errors():
            for i in range(0, len(letters), _SCAN_PAGE):
                self._redis().xdel(
                    keys.deadletters(platform), *[x.id for x in letters[i : i + _SCAN_PAGE]]
                )
        return len(letters)
