"""Dead letters: events a platform refused or that ran out of retries, kept with the reason.

One Redis stream per platform (per platform and shard in the cluster layout: a letter's
id is then `<shard>:<entry id>`, and listings merge the shards oldest first). Entries hold
the event exactly as it would be sent (already hashed), so replaying one is a plain
re-enqueue with the same event id.
"""

from __future__ import annotations

import builtins
import heapq
import json
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from dispatcher import keys
from dispatcher.client import Dispatcher
from dispatcher.compact import expand
from dispatcher.errors import ConfigurationError, DispatcherError
from dispatcher.identity import masked
from dispatcher.settings import PLATFORMS
from dispatcher.storage import translate_redis_errors

_SCAN_PAGE = 1000


def known_platform(platform: str) -> str:
    """`platform`, or a `ConfigurationError` naming the platforms there are."""
    if platform not in PLATFORMS:
        raise ConfigurationError(
            f"unknown platform {masked(platform)!r} (one of {', '.join(PLATFORMS)})"
        )
    return platform


_STREAM_ID = re.compile(r"(?:([0-9]+):)?([0-9]+)(?:-([0-9]+))?")  # shard:ms-seq
_U64 = 2**64 - 1


def valid_letter_id(text: object) -> str:
    """`text` if it can be a dead letter's id (a stream id, in a cluster with its shard);
    else the `ConfigurationError` that names it, before Redis is asked."""
    if isinstance(text, str):
        found = _STREAM_ID.fullmatch(text)
        if found and all(int(part) <= _U64 for part in found.groups()[1:] if part):
            return text
    shown = masked(text) if isinstance(text, str) else type(text).__name__
    raise ConfigurationError(f"{shown!r} is not a dead letter id (one is like 1700000000000-0)")


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operation takes: all of a platform's, narrowed by any of these
    (a `ConfigurationError` for a value that cannot be one: an id that is not a letter's,
    a time that is not whole epoch ms, a destination or reason that is not text)."""

    ids: Collection[str] | None = None
    destination: str | None = None
    since_ms: int | None = None  # dead-lettered at or after (epoch ms)
    until_ms: int | None = None  # dead-lettered before
    reason: str | None = None  # the reason contains this (case-insensitive)

    def __post_init__(self) -> None:
        if self.ids is not None:
            if isinstance(self.ids, str | bytes) or not isinstance(self.ids, Collection):
                raise ConfigurationError("ids must be a collection of dead letter ids")
            for given in self.ids:
                valid_letter_id(given)
        for name in ("since_ms", "until_ms"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 0 <= value <= _U64):
                raise ConfigurationError(f"{name} must be whole epoch milliseconds or None")
        for name in ("destination", "reason"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigurationError(f"{name} must be text or None")

    def takes(self, letter: DeadLetter) -> bool:
        """Whether `letter` is selected (the time range is applied by the scan itself)."""
        return (
            (self.ids is None or letter.id in self.ids)
            and (self.destination is None or letter.destination == self.destination)
            and (self.reason is None or self.reason.lower() in letter.reason.lower())
        )

    @property
    def everything(self) -> bool:
        return self == Selection()


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
    def from_entry(
        cls, entry_id: bytes, fields: dict[bytes, bytes], shard: int | None = None
    ) -> DeadLetter:
        """Decode one stream entry (of `shard`'s stream in the cluster layout)."""
        text = {k.decode(): v.decode() for k, v in fields.items() if k != b"p"}
        status = text.get("status", "")
        return cls(
            id=letter_id(entry_id.decode(), shard),
            destination=text["d"],
            event_id=text["e"],
            reason=text["reason"],
            status=int(status) if status else None,
            excerpt=text.get("excerpt", ""),
            attempts=int(text.get("attempts", "0")),
            failed_at_ms=int(text.get("at", "0")),
            happened_at_ms=int(text.get("t", "0")),
            payload=expand(fields[b"p"]),
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
            return sum(int(self._redis().xlen(key)) for _, key in _streams(platform))

    def iter(
        self, platform: str, destination: str | None = None, selection: Selection | None = None
    ) -> Iterator[DeadLetter]:
        """Every dead letter of a platform, oldest first, optionally for one destination
        or as `selection` narrows them."""
        chosen = selection or Selection(destination=destination)
        scans = [self._scan(key, shard, chosen) for shard, key in _streams(platform, chosen)]
        return heapq.merge(*scans, key=lambda letter: _entry_order(letter.id))

    def _scan(self, stream: str, shard: int | None, chosen: Selection) -> Iterator[DeadLetter]:
        start = "-" if chosen.since_ms is None else str(chosen.since_ms)
        end = "+" if chosen.until_ms is None else f"({chosen.until_ms}"
        while True:
            with translate_redis_errors():
                page = cast(
                    "builtins.list[tuple[bytes, dict[bytes, bytes]]]",
                    self._redis().xrange(stream, start, end, _SCAN_PAGE),
                )
            for entry_id, fields in page:
                letter = DeadLetter.from_entry(entry_id, fields, shard)
                if chosen.takes(letter):
                    yield letter
            if len(page) < _SCAN_PAGE:
                return
            start = "(" + page[-1][0].decode()

    def show(self, platform: str, letter_id: str) -> DeadLetter:
        """One dead letter by its id (as `list` shows it)."""
        stream, entry_id, shard = _locate(known_platform(platform), valid_letter_id(letter_id))
        with translate_redis_errors():
            found = cast(
                "builtins.list[tuple[bytes, dict[bytes, bytes]]]",
                self._redis().xrange(stream, entry_id, entry_id, 1),
            )
        if not found:
            raise DispatcherError(f"no dead letter {letter_id} in {platform}")
        return DeadLetter.from_entry(*found[0], shard)

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
        self, platform: str, ids: Sequence[str] | None, destination: str | None,
        selection: Selection | None,
    ) -> builtins.list[DeadLetter]:  # fmt: skip
        chosen = selection or Selection(ids=ids, destination=destination)
        if chosen.ids is not None:
            chosen = Selection(set(chosen.ids), chosen.destination, chosen.since_ms,
                               chosen.until_ms, chosen.reason)  # fmt: skip
        return list(self.iter(platform, selection=chosen))

    def replay(
        self,
        platform: str,
        ids: Sequence[str] | None = None,
        destination: str | None = None,
        *,
        selection: Selection | None = None,
        dry_run: bool = False,
    ) -> int:
        """Put dead letters back on their destinations' streams; returns how many (with
        `dry_run`, how many would be).

        The events keep their event ids, so a platform that already counted one
        deduplicates it. An entry leaves the dead-letter stream only after it is back on
        its destination stream (a crash in between leaves a duplicate, never a loss).

        Raises:
            UnknownDestinationError: a chosen letter's destination is not known (checked
                for every letter before anything is replayed, and by a dry run too).
            BackpressureError: a destination is at its backlog cap. Its letters stay dead
                letters and nothing after their chunk of 5,000 is replayed; the letters of
                other destinations in that chunk, and of earlier chunks, were replayed and
                left the dead letters, so calling again replays only what is left. Redis
                past its memory watermark refuses the whole chunk before writing any.
            StorageError: Redis refused a write (out of memory): the chunk's letters all
                stay, those of destinations already written too (a replay resends them).
        """
        letters = self._select(platform, ids, destination, selection)
        with translate_redis_errors():  # registered destinations too, as they are now
            for name in dict.fromkeys(letter.destination for letter in letters):
                self.dispatcher.registry.destination(name)
        if dry_run:
            return len(letters)
        for chunk_start in range(0, len(letters), 5000):
            chunk = letters[chunk_start : chunk_start + 5000]
            groups: dict[str, list[tuple[str, bytes, int]]] = {}
            for letter in chunk:
                groups.setdefault(letter.destination, []).append(
                    (letter.event_id, letter.payload, letter.happened_at_ms)
                )
            refused = self.dispatcher.write(groups, dedup=False)  # same ids, on purpose
            self._delete(platform, [x for x in chunk if x.destination not in refused])
            if refused:
                raise next(iter(refused.values()))
        return len(letters)

    def purge(
        self,
        platform: str,
        ids: Sequence[str] | None = None,
        destination: str | None = None,
        *,
        selection: Selection | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete dead letters for good; returns how many were (with `dry_run`, would be)."""
        chosen = selection or Selection(ids=ids, destination=destination)
        if chosen.everything and not dry_run:
            with translate_redis_errors():
                n = self.count(platform)
                for _, key in _streams(platform):
                    self._redis().delete(key)
            return n
        letters = self._select(platform, None, None, chosen)
        if dry_run:
            return len(letters)
        for i in range(0, len(letters), _SCAN_PAGE):
            self._delete(platform, letters[i : i + _SCAN_PAGE])
        return len(letters)

    def _delete(self, platform: str, letters: Sequence[DeadLetter]) -> None:
        by_stream: dict[str, builtins.list[str]] = {}
        for letter in letters:
            stream, entry_id, _ = _locate(platform, letter.id)
            by_stream.setdefault(stream, []).append(entry_id)
        with translate_redis_errors():
            for stream, ids in by_stream.items():
                self._redis().xdel(stream, *ids)


def letter_id(entry_id: str, shard: int | None) -> str:
    """A dead letter's id: its stream entry id, prefixed by its shard in the cluster layout."""
    return entry_id if shard is None else f"{shard}:{entry_id}"


def _streams(
    platform: str, chosen: Selection | None = None
) -> builtins.list[tuple[int | None, str]]:
    """(shard, key) of the dead-letter streams to look at: the one of a single node; in the
    cluster layout every shard's, or only the destination's when one is chosen."""
    known_platform(platform)
    if not keys.sharded():
        return [(None, keys.deadletters(platform))]
    if chosen is not None and chosen.destination is not None:
        shards: Iterable[int] = [keys.shard(chosen.destination)]
    else:
        shards = keys.shards()
    return [(shard, keys.deadletters(platform, shard)) for shard in shards]


def _locate(platform: str, letter_id: str) -> tuple[str, str, int | None]:
    """The stream, entry id and shard of a letter id as `DeadLetter.id` gives it."""
    if not keys.sharded():
        return keys.deadletters(platform), letter_id, None
    shard, _, entry_id = letter_id.partition(":")
    if not shard.isdecimal() or int(shard) not in keys.shards() or not entry_id:
        raise DispatcherError(f"no dead letter {letter_id} in {platform} (ids are <shard>:<id>)")
    return keys.deadletters(platform, int(shard)), entry_id, int(shard)


def _entry_order(letter_id: str) -> tuple[int, int]:
    ms, _, seq = letter_id.rpartition(":")[2].partition("-")
    return int(ms), int(seq or 0)
