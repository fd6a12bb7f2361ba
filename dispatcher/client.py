"""The producer API: validate, hash, and append events to Redis.

The producer talks to Redis only: the enqueue script also makes the destination due in
its platform's due index, where the workers' schedulers find it (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis
import redis.asyncio

from dispatcher import keys
from dispatcher.conversion import Conversion, fan_out
from dispatcher.errors import (
    ConfigurationError,
    DispatcherError,
    FieldError,
    InvalidEventError,
)
from dispatcher.events import PlatformEvent, model_for
from dispatcher.receipts import BulkReceipt, FanOutReceipt, Receipt, Receipts
from dispatcher.registry import Registry
from dispatcher.settings import Destination, Settings, get_settings
from dispatcher.storage import aopen_store, open_store, reopen_store, translate_redis_errors
from dispatcher.validation import REFUSED, refusal
from dispatcher.writer import CHUNK_EVENTS, Refused, Writer

RULE_NAMES_TTL_S = 60.0  # how long a producer trusts the rule names it read
RULE_MISS_TTL_S = 5.0  # how soon an unknown rule name is looked up again

log = logging.getLogger(__name__)
AsyncRedis = redis.asyncio.Redis
EventInput = PlatformEvent | Mapping[str, Any]


@dataclass
class Plan:
    """Script arguments for one call, grouped by destination."""

    groups: dict[str, list[tuple[str, bytes, int]]] = field(default_factory=dict)
    receipts: Receipts = field(default_factory=Receipts)
    rejected: list[FieldError] = field(default_factory=list)

    def add(self, destination: str, model: PlatformEvent) -> None:
        """Add a validated event's script arguments and its receipt."""
        event_id, payload = model.to_payload()
        rows = self.groups.get(destination)
        if rows is None:
            rows = self.groups[destination] = []
        rows.append((event_id, payload, model.happened_at_ms()))
        self.receipts.event_ids.append(event_id)
        self.receipts.destinations.append(destination)


Target = tuple[str, Destination]  # a destination id and its settings, resolved once a call
# (input platform, destination) -> the target, or why a routed destination takes nothing
Targets = dict[tuple[str | None, str | None], Target | ConfigurationError]


class Dispatcher:
    """Enqueues events for delivery. Thread-safe; create one per process and reuse it."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.writer = Writer(self.settings)
        self._redis: redis.Redis | None = None
        self._aredis: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis]
        self._aredis = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._rule_names: dict[str, tuple[float, dict[str, str]]] = {}
        self._registry: Registry | None = None

    # -- public API -------------------------------------------------------------------

    def enqueue(self, event: EventInput, destination: str | None = None) -> Receipt:
        """Validate one event and store it; raises `InvalidEventError` naming bad fields."""
        _not_a_conversion(event)
        return self.enqueue_many([event], destination).receipts[0]

    def enqueue_conversion(self, conversion: Conversion) -> FanOutReceipt:
        """Store one event for each destination routed for `conversion.event`. Each
        destination takes its event or, at its backlog cap, is reported in `skipped`."""
        return self.enqueue_conversions([conversion])[0]

    def enqueue_conversions(self, conversions: Iterable[Conversion]) -> list[FanOutReceipt]:
        """`enqueue_conversion` for many (imports, replays), written in chunks."""
        _check_events(conversions, "conversions")
        out: list[FanOutReceipt] = []
        self._sync()
        try:
            size = CHUNK_EVENTS // 4
            for n, chunk in enumerate(_chunked(conversions, size)):
                plan, fanned = self._plan_conversions(chunk, first=n * size)
                _skip_refused(fanned, self.writer.write(self.redis, plan.groups))
                out += fanned
        except DispatcherError as exc:
            exc.stored = out  # the fan-out receipts of the chunks stored before
            raise
        return out

    async def aenqueue_conversion(self, conversion: Conversion) -> FanOutReceipt:
        """The asyncio twin of `enqueue_conversion`."""
        await self._async_sync()
        if isinstance(conversion, Conversion):
            await self._arule_names(conversion)
        plan, fanned = self._plan_conversions([conversion])
        _skip_refused(fanned, await self.writer.awrite(self._aclient(), plan.groups))
        return fanned[0]

    def enqueue_many(
        self,
        events: Iterable[EventInput],
        destination: str | None = None,
        *,
        on_invalid: Literal["raise", "skip"] = "raise",
    ) -> BulkReceipt:
        """Validate and store any number of events (a list, a generator of millions).

        Events are validated and written in chunks of `CHUNK_EVENTS`, each chunk of each
        destination in one atomic Redis call, and chunk k+1 is validated while chunk k is
        written. With `on_invalid="raise"` (the default) an invalid event refuses its
        chunk: `InvalidEventError` lists every bad event of it by index and field. Input
        of one chunk is then stored not at all; with more, the chunks before are stored
        and the error's `stored` lists their receipts. With `"skip"` the valid events are
        stored and the invalid ones returned in `BulkReceipt.rejected`. A destination at
        its backlog cap raises `BackpressureError` (with `stored` too), nothing of its
        refused chunk written.
        """
        _check_events(events)
        _check_destination(destination)
        return self._store_all(events, on_invalid, _one_chunk(events), destination)

    def enqueue_routed(
        self,
        items: Iterable[tuple[str, EventInput]],
        *,
        on_invalid: Literal["raise", "skip"] = "raise",
    ) -> BulkReceipt:
        """`enqueue_many` for events of many destinations: `(destination, event)` pairs.

        A chunk's events of all its destinations are written in one round trip (a script
        call per destination, pipelined), so 1,000 destinations of 50 events cost ten
        round trips, not a thousand. An item that is not such a pair, or names a
        destination that is unknown or takes no events, is a bad item: `InvalidEventError`
        naming `destination` (or `item`) with its index, or a rejection in skip mode.
        """
        _check_events(items)
        return self._store_all(items, on_invalid, _one_chunk(items), routed=True)

    def _store_all(
        self,
        items: Iterable[Any],
        on_invalid: str,
        inline: bool,
        destination: str | None = None,
        routed: bool = False,
    ) -> BulkReceipt:
        """Validate and write `items` (events for `destination`, or with `routed`
        (destination, event) pairs) chunk by chunk; `inline`: written here, without a
        thread handoff (one chunk has nothing to overlap with)."""
        out = BulkReceipt()
        writing: tuple[Plan, Future[Refused]] | None = None
        self._sync()
        try:
            for plan in self._plans(items, on_invalid, destination, routed):
                if inline:
                    _collect_now(out, plan, self.writer.write(self.redis, plan.groups))
                    continue
                if writing is not None:
                    done, writing = writing, None  # collected once, even if it raises
                    _collect(out, *done)
                writing = (
                    plan,
                    self._writer_pool().submit(self.writer.write, self.redis, plan.groups),
                )
            if writing is not None:
                done, writing = writing, None
                _collect(out, *done)
        except BaseException as exc:
            # Whatever stops the call (a bad event, a full destination, the caller's own
            # iterable raising), the write in flight ends before the caller hears of it, and
            # what is stored is in `stored`: nothing lands after the call has returned.
            if writing is not None:
                with contextlib.suppress(Exception):  # its own failure: `exc` comes first
                    _collect(out, *writing)
            if isinstance(exc, DispatcherError):
                exc.stored = out.receipts
            raise
        return out

    async def aenqueue(self, event: EventInput, destination: str | None = None) -> Receipt:
        """The asyncio twin of `enqueue`."""
        _not_a_conversion(event)
        return (await self.aenqueue_many([event], destination)).receipts[0]

    async def aenqueue_many(
        self,
        events: Iterable[EventInput],
        destination: str | None = None,
        *,
        on_invalid: Literal["raise", "skip"] = "raise",
    ) -> BulkReceipt:
        """The asyncio twin of `enqueue_many` (one Redis client per event loop)."""
        _check_events(events)
        _check_destination(destination)
        return await self._astore_all(events, on_invalid, destination)

    async def aenqueue_routed(
        self,
        items: Iterable[tuple[str, EventInput]],
        *,
        on_invalid: Literal["raise", "skip"] = "raise",
    ) -> BulkReceipt:
        """The asyncio twin of `enqueue_routed`."""
        _check_events(items)
        return await self._astore_all(items, on_invalid, routed=True)

    async def _astore_all(
        self,
        items: Iterable[Any],
        on_invalid: str,
        destination: str | None = None,
        routed: bool = False,
    ) -> BulkReceipt:
        await self._async_sync()
        out = BulkReceipt()
        try:
            for plan in self._plans(items, on_invalid, destination, routed):
                refused = await self.writer.awrite(self._aclient(), plan.groups)
                _collect_now(out, plan, refused)
        except DispatcherError as exc:
            exc.stored = out.receipts
            raise
        return out

    def store(self, plan: Plan, *, dedup: bool = True) -> None:
        """Write a validated plan (dead-letter replays pass `dedup=False`)."""
        refused = self.writer.write(self.redis, plan.groups, dedup)
        if refused:
            raise next(iter(refused.values()))

    @property
    def redis(self) -> redis.Redis:
        """The synchronous Redis client, connected on first use."""
        with self._lock, translate_redis_errors():
            if self._redis is None:
                self._redis = open_store(self.settings)
            elif self.writer.lost:  # a cluster client can stay routed to a dead master
                self._redis, self.writer.lost = reopen_store(self.settings, self._redis), False
            return self._redis

    def _aclient(self) -> AsyncRedis:
        """This event loop's asyncio client: a client is bound to the loop that made it."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aredis.get(loop)
            if client is None:
                client = self._aredis[loop] = aopen_store(self.settings)
            return client

    def _writer_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="enqueue")
            return self._pool

    def close(self) -> None:
        """Release connections (asyncio clients are closed by `aclose`)."""
        if self._redis is not None:
            self._redis.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def aclose(self) -> None:
        """Release the running event loop's asyncio connections."""
        client = self._aredis.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # -- internals --------------------------------------------------------------------

    def _resolve(self, platform: str | None, destination: str | None) -> str:
        if destination is not None:
            _check_destination(destination)
            with translate_redis_errors():
                self.registry.destination(destination)  # just registered elsewhere: found
            return destination
        candidates = [
            name for name, d in self.settings.destinations.items() if d.platform == platform
        ]
        if len(candidates) != 1:
            raise ConfigurationError(
                f"pass destination=: {len(candidates)} destinations are configured for "
                f"{platform or 'this input'}"
            )
        return candidates[0]

    def _plans(
        self, items: Iterable[Any], on_invalid: str, destination: str | None, routed: bool
    ) -> Iterator[Plan]:
        """The input (events for `destination`, or with `routed` (destination, event)
        pairs) as validated chunks; in raise mode a chunk with an invalid event raises
        `InvalidEventError` instead. No pair is made for unrouted events: a chunk of 5,000
        new pairs outlives a few collections, and 20 chunks cost a full collection."""
        if on_invalid not in ("raise", "skip"):
            raise ConfigurationError(f"on_invalid must be 'raise' or 'skip', not {on_invalid!r}")
        index = 0
        targets: Targets = {}  # destinations resolved once a call
        for chunk in _chunked(items, CHUNK_EVENTS):
            plan = Plan()
            for raw in chunk:
                try:
                    if routed:
                        destination, raw = _route(raw)
                    name, model = self._validate(raw, destination, targets, routed)
                    plan.add(name, model)
                except REFUSED as exc:
                    plan.rejected.extend(refusal(exc, index).errors)
                index += 1
            if plan.rejected and on_invalid == "raise":
                raise InvalidEventError(plan.rejected)
            yield plan
        if index == 0 and destination is not None:  # no event: the destination is still checked
            self._target(None, destination)

    def _plan_conversions(
        self, conversions: Iterable[Conversion], first: int | None = None
    ) -> tuple[Plan, list[FanOutReceipt]]:
        """The events `conversions` fan out to; every bad conversion is named (with its
        index from `first` in bulk calls) in one `InvalidEventError`."""
        plan, fanned, errors = Plan(), [], []
        for i, conversion in enumerate(conversions):
            one = Plan()
            try:
                if not isinstance(conversion, Conversion):
                    kind = type(conversion).__name__
                    raise InvalidEventError(
                        [FieldError("conversion", f"must be a Conversion, not {kind}")]
                    )
                # Validated again: the caller may have made it with `model_copy(update=...)`.
                conversion = Conversion.__pydantic_validator__.validate_python(conversion)
                events, skipped = fan_out(
                    conversion,
                    self.settings,
                    lambda raw, name: self._validate(raw, name)[1],
                    self._rule_urn,
                )
                for name, model in events:
                    one.add(name, model)
            except REFUSED as exc:
                errors += refusal(exc, None if first is None else first + i).errors
                continue
            for name, rows in one.groups.items():
                plan.groups.setdefault(name, []).extend(rows)
            fanned.append(FanOutReceipt(list(one.receipts), skipped))
        if errors:
            raise InvalidEventError(errors)
        return plan, fanned

    def _rule_urn(self, destination: str, name: str) -> str | None:
        """A LinkedIn rule's URN by name, from what `convdispatch linkedin ensure` stored;
        re-read from Redis at most every `RULE_NAMES_TTL_S` (sooner after a miss)."""
        if self._rule_names_stale(destination, name):
            with translate_redis_errors():
                raw = self.redis.hgetall(keys.rule_names(destination))
            self._keep_rule_names(destination, cast(dict[bytes, bytes], raw))
        return self._rule_names[destination][1].get(name)

    async def _arule_names(self, conversion: Conversion) -> None:
        """Refresh, on this loop's client, the rule names `conversion`'s routes need, so
        its fan-out finds them cached and never blocks the loop on Redis."""
        for route in self.settings.routes:
            wanted = route.event == conversion.event and route.conversion is None
            if wanted and route.rule and self._rule_names_stale(route.destination, route.rule):
                with translate_redis_errors():
                    raw = await self._aclient().hgetall(keys.rule_names(route.destination))
                self._keep_rule_names(route.destination, cast(dict[bytes, bytes], raw))

    def _rule_names_stale(self, destination: str, name: str) -> bool:
        loaded_at, names = self._rule_names.get(destination, (-1e9, {}))
        ttl = RULE_NAMES_TTL_S if name in names else RULE_MISS_TTL_S
        return time.monotonic() - loaded_at > ttl

    def _keep_rule_names(self, destination: str, raw: dict[bytes, bytes]) -> None:
        names = {k.decode(): v.decode() for k, v in raw.items()}
        self._rule_names[destination] = (time.monotonic(), names)

    @property
    def registry(self) -> Registry:
        """Destinations and routes registered at runtime (`dispatcher.registry`)."""
        client = self.redis  # takes the lock itself
        with self._lock:
            if self._registry is None:
                self._registry = Registry(self.settings, client)
            return self._registry

    def _sync(self) -> None:
        with translate_redis_errors():
            self.registry.sync()

    async def _async_sync(self) -> None:
        if self.registry.due():
            await asyncio.to_thread(self._sync)

    def _target(self, platform: str | None, destination: str | None) -> Target:
        """The destination events of `platform` go to, checked to take new events."""
        name = self._resolve(platform, destination)
        dest = self.settings.destination(name)
        if not dest.enabled or dest.draining:
            why = "is disabled" if not dest.enabled else "is being removed (draining)"
            raise ConfigurationError(f"destination {name!r} {why}: it takes no new events")
        if platform is not None and platform != dest.platform:
            raise ConfigurationError(
                f"a {platform} event cannot go to {dest.platform} destination {name!r}"
            )
        return name, dest

    def _validate(
        self,
        raw: EventInput,
        destination: str | None,
        targets: Targets | None = None,
        routed: bool = False,
    ) -> tuple[str, PlatformEvent]:
        """The validated model of `raw` and where it goes; `targets` caches the resolved
        destinations of one call (the hot path resolves each once, not once per event).
        With `routed` the destination is the item's: a bad one refuses the item."""
        platform = raw.platform if isinstance(raw, PlatformEvent) else None
        key = (platform, destination)
        target = targets.get(key) if targets is not None else None
        if target is None:
            try:
                target = self._target(platform, destination)
            except ConfigurationError as exc:
                if not routed:
                    raise
                target = exc  # a bad destination is looked up once a call, not once an item
            if targets is not None:
                targets[key] = target
        if isinstance(target, ConfigurationError):
            raise InvalidEventError([FieldError("destination", str(target))])
        name, dest = target
        # The model's validator itself (`model_validate` adds two Python calls an event);
        # a model is validated again: the caller may have changed it since it was built.
        kind = type(raw) if isinstance(raw, PlatformEvent) else model_for(dest.platform)
        try:
            model: PlatformEvent = kind.__pydantic_validator__.validate_python(raw)
        except REFUSED as exc:
            raise refusal(exc) from None
        problems = model.policy_errors(dest)
        if problems:
            raise InvalidEventError([FieldError(f, m) for f, m in problems])
        return name, model


def _not_a_conversion(event: object) -> None:
    if isinstance(event, Conversion):
        raise ConfigurationError(
            "a Conversion goes to the destinations its routes name: use enqueue_conversion"
        )


def _check_events(events: object, name: str = "events") -> None:
    if isinstance(events, str | bytes | Mapping | PlatformEvent | Conversion) or not isinstance(
        events, Iterable
    ):
        message = f"must be an iterable of {name}, not {type(events).__name__}"
        raise InvalidEventError([FieldError(name, message)])


def _one_chunk(events: object) -> bool:
    return isinstance(events, Sized) and len(events) <= CHUNK_EVENTS


def _check_destination(destination: object) -> None:
    if destination is not None and not isinstance(destination, str):
        kind = type(destination).__name__
        raise ConfigurationError(f"destination must be a destination id, not a {kind}")


def _route(item: object) -> tuple[str, EventInput]:
    """A routed item as (destination, event), or `InvalidEventError` naming `item`."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return item
    message = f"must be a (destination, event) pair, not {type(item).__name__}"
    raise InvalidEventError([FieldError("item", message)])


def _chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _collect(out: BulkReceipt, plan: Plan, writing: Future[Refused]) -> None:
    _collect_now(out, plan, writing.result())


def _collect_now(out: BulkReceipt, plan: Plan, refused: Refused) -> None:
    out.receipts.extend(plan.receipts, skip=refused)
    out.rejected += plan.rejected
    if refused:
        raise next(iter(refused.values()))


def _skip_refused(fanned: list[FanOutReceipt], refused: Refused) -> None:
    """A destination at its cap does not hold up the others: it is skipped, with why."""
    for receipt in fanned:
        for r in [r for r in receipt.receipts if r.destination in refused]:
            receipt.receipts.remove(r)
            receipt.skipped.append((r.destination, f"backpressure: {refused[r.destination]}"))
