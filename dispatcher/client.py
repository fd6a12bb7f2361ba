"""The producer API: validate, hash, and append events to Redis.

The producer talks to Redis only: the enqueue script also makes the destination due in
its platform's due index, where the workers' schedulers find it (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import redis
import redis.asyncio

from dispatcher.conversion import Conversion
from dispatcher.errors import (
    ConfigurationError,
    DispatcherError,
    FieldError,
    InvalidEventError,
)
from dispatcher.events import PlatformEvent, model_for
from dispatcher.plan import (
    CONVERSION_ITEM,
    EventInput,
    Plan,
    Target,
    Targets,
    check_destination,
    check_events,
    chunked,
    collect,
    collect_now,
    not_a_conversion,
    one_chunk,
    one_event,
    plan_conversions,
    route,
    skip_refused,
    target_of,
)
from dispatcher.receipts import BulkReceipt, FanOutReceipt, Receipt
from dispatcher.registry import Registry
from dispatcher.rule_names import RuleNames
from dispatcher.settings import Settings, get_settings
from dispatcher.storage import aopen_store, open_store, reopen_store, translate_redis_errors
from dispatcher.validation import REFUSED, refusal
from dispatcher.writer import CHUNK_EVENTS, Refused, Rows, Writer

log = logging.getLogger(__name__)
AsyncRedis = redis.asyncio.Redis


class Dispatcher:
    """Enqueues events for delivery. Thread-safe; create one per process and reuse it."""

    def __init__(self, settings: Settings | None = None) -> None:
        if settings is not None and not isinstance(settings, Settings):
            raise ConfigurationError("settings must be a Settings, e.g. Settings(redis_url=...)")
        self.settings = get_settings() if settings is None else settings
        self.writer = Writer(self.settings)
        self._redis: redis.Redis | None = None
        self._aredis: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis]
        self._aredis = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._rule_names = RuleNames()
        self._registry: Registry | None = None

    # -- public API -------------------------------------------------------------------

    def enqueue(self, event: EventInput, destination: str | None = None) -> Receipt:
        """Validate one event and store it; raises `InvalidEventError` naming bad fields."""
        not_a_conversion(event)
        with one_event():
            return self.enqueue_many([event], destination).receipts[0]

    def enqueue_conversion(self, conversion: Conversion) -> FanOutReceipt:
        """Store one event for each destination routed for `conversion.event`. Each
        destination takes its event or, at its backlog cap, is reported in `skipped`."""
        with one_event():
            return self.enqueue_conversions([conversion])[0]

    def enqueue_conversions(self, conversions: Iterable[Conversion]) -> list[FanOutReceipt]:
        """`enqueue_conversion` for many (imports, replays), written in chunks."""
        check_events(conversions, "conversions")
        out: list[FanOutReceipt] = []
        self._sync()
        try:
            size = CHUNK_EVENTS // 4
            for n, chunk in enumerate(chunked(conversions, size)):
                plan, fanned = self._plan_conversions(chunk, first=n * size)
                skip_refused(fanned, self.writer.write(self.redis, plan.groups))
                out += fanned
        except DispatcherError as exc:
            exc.stored = out  # the fan-out receipts of the chunks stored before
            raise
        return out

    async def aenqueue_conversion(self, conversion: Conversion) -> FanOutReceipt:
        """The asyncio twin of `enqueue_conversion`."""
        await self._async_sync()
        if isinstance(conversion, Conversion):
            routes, event = self.settings.routes, conversion.event
            await self._rule_names.arefresh(self._aclient(), routes, event)
        plan, fanned = self._plan_conversions([conversion])
        skip_refused(fanned, await self.writer.awrite(self._aclient(), plan.groups))
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
        check_events(events)
        check_destination(destination)
        return self._store_all(events, on_invalid, one_chunk(events), destination)

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
        check_events(items)
        return self._store_all(items, on_invalid, one_chunk(items), routed=True)

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
                    collect_now(out, plan, self.writer.write(self.redis, plan.groups))
                    continue
                if writing is not None:
                    done, writing = writing, None  # collected once, even if it raises
                    collect(out, *done)
                writing = (
                    plan,
                    self._writer_pool().submit(self.writer.write, self.redis, plan.groups),
                )
            if writing is not None:
                done, writing = writing, None
                collect(out, *done)
        except BaseException as exc:
            # Whatever stops the call (a bad event, a full destination, the caller's own
            # iterable raising), the write in flight ends before the caller hears of it, and
            # what is stored is in `stored`: nothing lands after the call has returned.
            if writing is not None:
                with contextlib.suppress(Exception):  # its own failure: `exc` comes first
                    collect(out, *writing)
            if isinstance(exc, DispatcherError):
                exc.stored = out.receipts
            raise
        return out

    async def aenqueue(self, event: EventInput, destination: str | None = None) -> Receipt:
        """The asyncio twin of `enqueue`."""
        not_a_conversion(event)
        with one_event():
            return (await self.aenqueue_many([event], destination)).receipts[0]

    async def aenqueue_many(
        self,
        events: Iterable[EventInput],
        destination: str | None = None,
        *,
        on_invalid: Literal["raise", "skip"] = "raise",
    ) -> BulkReceipt:
        """The asyncio twin of `enqueue_many` (one Redis client per event loop)."""
        check_events(events)
        check_destination(destination)
        return await self._astore_all(events, on_invalid, destination)

    async def aenqueue_routed(
        self,
        items: Iterable[tuple[str, EventInput]],
        *,
        on_invalid: Literal["raise", "skip"] = "raise",
    ) -> BulkReceipt:
        """The asyncio twin of `enqueue_routed`."""
        check_events(items)
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
                collect_now(out, plan, refused)
        except DispatcherError as exc:
            exc.stored = out.receipts
            raise
        return out

    def write(self, groups: Mapping[str, Rows], *, dedup: bool = True) -> Refused:
        """Write validated rows per destination; the destinations refused, with why
        (dead-letter replays pass `dedup=False`)."""
        return self.writer.write(self.redis, groups, dedup)

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
        for chunk in chunked(items, CHUNK_EVENTS):
            plan = Plan()
            for raw in chunk:
                try:
                    if routed:
                        destination, raw = route(raw)
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
        return plan_conversions(
            conversions,
            self.settings,
            lambda raw, name: self._validate(raw, name)[1],
            lambda destination, rule: self._rule_names.urn(self.redis, destination, rule),
            first,
        )

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
        if destination is not None:
            check_destination(destination)
            with translate_redis_errors():
                self.registry.destination(destination)  # just registered elsewhere: found
        return target_of(self.settings, platform, destination)

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
        if isinstance(raw, Conversion):  # one item of a bulk call, whatever its destination
            raise InvalidEventError([FieldError("event", CONVERSION_ITEM)])
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
        kind = model_for(dest.platform)  # not the caller's class: a subclass may skip it
        try:
            model: PlatformEvent = kind.__pydantic_validator__.validate_python(raw)
        except REFUSED as exc:
            raise refusal(exc) from None
        window_s = self.settings.platform(dest.platform).acceptance_window_s
        problems = model.policy_errors(dest) + model.window_errors(window_s)
        if problems:
            raise InvalidEventError([FieldError(f, m) for f, m in problems])
        return name, model


__all__ = ["Dispatcher", "EventInput", "Plan"]
