"""The producer API: validate, hash, and append events to Redis.

The producer talks to Redis only: the enqueue script also makes the destination due in
its platform's due index, where the workers' schedulers find it (docs/architecture.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio

from dispatcher import keys
from dispatcher.conversion import Conversion, fan_out
from dispatcher.errors import (
    BackpressureError,
    ConfigurationError,
    FieldError,
    InvalidEventError,
)
from dispatcher.events import PlatformEvent, model_for
from dispatcher.settings import Settings, get_settings
from dispatcher.storage import aconnect, connect, lua, translate_redis_errors
from dispatcher.validation import refusing

log = logging.getLogger(__name__)
AsyncRedis = redis.asyncio.Redis
MEMORY_CHECK_S = 1.0  # how long a reading of Redis's INFO memory is trusted
BYTES_PER_ENTRY = 200  # a stream entry's overhead beyond its payload, for the estimate
EventInput = PlatformEvent | Mapping[str, Any]


@dataclass(frozen=True)
class Receipt:
    """Proof that one event is stored durably and will be delivered or dead-lettered."""

    event_id: str
    destination: str


@dataclass
class BulkReceipt:
    """What `enqueue_many` stored, and (with `on_invalid="skip"`) what it refused."""

    receipts: list[Receipt] = field(default_factory=list)
    rejected: list[FieldError] = field(default_factory=list)


@dataclass
class FanOutReceipt:
    """What one platform-neutral `Conversion` became: a receipt per destination, and the
    destinations skipped, each with the reason (missing identifiers, a platform rule)."""

    receipts: list[Receipt] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Plan:
    """Script arguments for one call, grouped by destination."""

    groups: dict[str, list[tuple[str, bytes, int]]] = field(default_factory=dict)
    receipts: list[Receipt] = field(default_factory=list)
    rejected: list[FieldError] = field(default_factory=list)


class Dispatcher:
    """Enqueues events for delivery. Thread-safe; create one per process and reuse it."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._redis: redis.Redis | None = None
        self._aredis: redis.asyncio.Redis | None = None
        self._lock = threading.Lock()
        self._memory_checked_s = 0.0
        self._memory_used = self._memory_limit = 0

    # -- public API -------------------------------------------------------------------

    def enqueue(self, event: EventInput, destination: str | None = None) -> Receipt:
        """Validate one event and store it; raises `InvalidEventError` naming bad fields."""
        return self.enqueue_many([event], destination).receipts[0]

    def enqueue_conversion(self, conversion: Conversion) -> FanOutReceipt:
        """Store one event per destination routed for `conversion.event`, atomically."""
        plan, skipped = self._plan_conversion(conversion)
        self.store(plan)
        return FanOutReceipt(plan.receipts, skipped)

    def enqueue_conversions(self, conversions: Iterable[Conversion]) -> list[FanOutReceipt]:
        """`enqueue_conversion` for many, in one atomic Redis call (imports, replays)."""
        plan, out = Plan(), []
        for conversion in conversions:
            one, skipped = self._plan_conversion(conversion)
            for name, rows in one.groups.items():
                plan.groups.setdefault(name, []).extend(rows)
            plan.receipts += one.receipts
            out.append(FanOutReceipt(one.receipts, skipped))
        self.store(plan)
        return out

    async def aenqueue_conversion(self, conversion: Conversion) -> FanOutReceipt:
        """The asyncio twin of `enqueue_conversion`."""
        plan, skipped = self._plan_conversion(conversion)
        await self._astore(plan)
        return FanOutReceipt(plan.receipts, skipped)

    def enqueue_many(
        self,
        events: Iterable[EventInput],
        destination: str | None = None,
        *,
        on_invalid: Literal["raise", "skip"] = "raise",
    ) -> BulkReceipt:
        """Validate and store many events in one atomic Redis call.

        With `on_invalid="raise"` (the default) one invalid event refuses the whole call:
        `InvalidEventError` lists every bad event by index and field, and nothing is
        written. With `"skip"` the valid events are stored and the invalid ones are
        returned in `BulkReceipt.rejected`.
        """
        plan = self._plan(events, destination, on_invalid)
        self.store(plan)
        return BulkReceipt(plan.receipts, plan.rejected)

    async def aenqueue(self, event: EventInput, destination: str | None = None) -> Receipt:
        """The asyncio twin of `enqueue`."""
        return (await self.aenqueue_many([event], destination)).receipts[0]

    async def aenqueue_many(
        self,
        events: Iterable[EventInput],
        destination: str | None = None,
        *,
        on_invalid: Literal["raise", "skip"] = "raise",
    ) -> BulkReceipt:
        """The asyncio twin of `enqueue_many`."""
        plan = self._plan(events, destination, on_invalid)
        await self._astore(plan)
        return BulkReceipt(plan.receipts, plan.rejected)

    async def _astore(self, plan: Plan) -> None:
        if not plan.groups:
            return
        keys_, args = self._script_args(plan)
        with translate_redis_errors(), _backpressure(list(plan.groups)):
            if self._aredis is None:
                self._aredis = aconnect(self.settings.redis_url)
            await self._check_memory_async(self._aredis, plan)
            script = lua("dispatcher", "enqueue.lua")
            await self._aredis.eval(script, len(keys_), *keys_, *args)

    @property
    def redis(self) -> redis.Redis:
        """The synchronous Redis client, connected on first use."""
        with self._lock:
            if self._redis is None:
                self._redis = connect(self.settings.redis_url)
            return self._redis

    def store(self, plan: Plan) -> None:
        """Append a validated plan to its streams atomically; the scheduler takes it from there."""
        if not plan.groups:
            return
        keys_, args = self._script_args(plan)
        client = self.redis
        with translate_redis_errors(), _backpressure(list(plan.groups)):
            if self._memory_stale():
                self._memory_seen(client.info("memory"))
            self._refuse_if_full(plan)
            client.eval(lua("dispatcher", "enqueue.lua"), len(keys_), *keys_, *args)

    def close(self) -> None:
        """Release connections (the asyncio client is closed by `aclose`)."""
        if self._redis is not None:
            self._redis.close()

    async def aclose(self) -> None:
        """Release the asyncio connections."""
        if self._aredis is not None:
            await self._aredis.aclose()

    # -- internals --------------------------------------------------------------------

    def _resolve(self, platform: str | None, destination: str | None) -> str:
        if destination is not None:
            if not isinstance(destination, str):
                kind = type(destination).__name__
                raise ConfigurationError(f"destination must be a destination id, not a {kind}")
            self.settings.destination(destination)
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

    def _plan(self, events: Iterable[EventInput], destination: str | None, on_invalid: str) -> Plan:
        if on_invalid not in ("raise", "skip"):
            raise ConfigurationError(f"on_invalid must be 'raise' or 'skip', not {on_invalid!r}")
        if isinstance(events, str | bytes | Mapping | PlatformEvent) or not isinstance(
            events, Iterable
        ):
            message = f"must be an iterable of events, not {type(events).__name__}"
            raise InvalidEventError([FieldError("events", message)])
        plan = Plan()
        for index, raw in enumerate(events):
            try:
                name, model = self._validate(raw, destination, index)
                with refusing(index):
                    _add(plan, name, model)
            except InvalidEventError as exc:
                plan.rejected.extend(exc.errors)
        if plan.rejected and on_invalid == "raise":
            raise InvalidEventError(plan.rejected)
        return plan

    def _plan_conversion(self, conversion: Conversion) -> tuple[Plan, list[tuple[str, str]]]:
        plan = Plan()
        events, skipped = fan_out(
            conversion, self.settings, lambda raw, name: self._validate(raw, name, None)[1]
        )
        for name, model in events:
            _add(plan, name, model)
        return plan, skipped

    def _validate(
        self, raw: EventInput, destination: str | None, index: int | None
    ) -> tuple[str, PlatformEvent]:
        if isinstance(raw, PlatformEvent):
            name = self._resolve(raw.platform, destination)
            with refusing(index):  # validated again: the caller may have changed it since
                model = type(raw).model_validate(raw)
        else:
            name = self._resolve(None, destination)
            platform = self.settings.destination(name).platform
            with refusing(index):
                model = model_for(platform).model_validate(raw)
        dest = self.settings.destination(name)
        if model.platform != dest.platform:
            raise ConfigurationError(
                f"a {model.platform} event cannot go to {dest.platform} destination {name!r}"
            )
        problems = model.policy_errors(dest)
        if problems:
            raise InvalidEventError([FieldError(f, m, index) for f, m in problems])
        return name, model

    def _script_args(self, plan: Plan) -> tuple[list[str], list[Any]]:
        keys_: list[str] = []
        args: list[Any] = [keys.GROUP, len(plan.groups)]
        for name, rows in plan.groups.items():
            platform = self.settings.destination(name).platform
            table = self.settings.platform(platform)
            keys_ += [keys.stream(name), keys.state(name), keys.lease(name), keys.due(platform)]
            max_wait_ms = int(table.max_wait_s * 1000)
            args += [name, platform, table.max_backlog, table.batch_size, max_wait_ms, len(rows)]
            for event_id, payload, at_ms in rows:
                # Bytes pass through redis-py's encoder untouched: this loop is the hot path.
                args += [payload, event_id.encode(), b"%d" % at_ms]
        return keys_, args

    # -- the memory guard: refuse before Redis itself refuses writes ------------------

    def _memory_stale(self) -> bool:
        return time.monotonic() - self._memory_checked_s > MEMORY_CHECK_S

    def _memory_seen(self, info: Mapping[str, Any]) -> None:
        self._memory_limit = int(info.get("maxmemory", 0))
        self._memory_used = int(info.get("used_memory", 0))
        self._memory_checked_s = time.monotonic()

    async def _check_memory_async(self, client: AsyncRedis, plan: Plan) -> None:
        if self._memory_stale():
            self._memory_seen(await client.info("memory"))
        self._refuse_if_full(plan)

    def _refuse_if_full(self, plan: Plan) -> None:
        """Refuse past the watermark; between readings, count what this producer adds."""
        if not self._memory_limit:
            return
        if self._memory_used >= self._memory_limit * self.settings.memory_high_watermark:
            raise BackpressureError.memory(self.settings.memory_high_watermark)
        rows = [row for group in plan.groups.values() for row in group]
        self._memory_used += sum(len(payload) for _, payload, _ in rows) + BYTES_PER_ENTRY * len(
            rows
        )


def _add(plan: Plan, destination: str, model: PlatformEvent) -> None:
    event_id, payload = model.to_payload()
    plan.groups.setdefault(destination, []).append((event_id, payload, model.happened_at_ms()))
    plan.receipts.append(Receipt(event_id, destination))


@contextmanager
def _backpressure(destinations: list[str]) -> Iterator[None]:
    """Turn the script's BACKPRESSURE reply into `BackpressureError` naming the destination,
    and Redis's own OOM refusal (nothing was written) into `BackpressureError` too."""
    try:
        yield
    except redis.ResponseError as exc:
        words = str(exc).split()
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM" in str(exc):
            raise BackpressureError.memory(1.0) from None
        if words[:1] != ["BACKPRESSURE"]:
            raise
        index, backlog, cap = (int(w) for w in words[1:4])
        raise BackpressureError(destinations[index - 1], backlog, cap) from None
