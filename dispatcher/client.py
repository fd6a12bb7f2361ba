"""The producer API: validate, hash, and append events to Redis, then nudge a worker.

Nothing here imports worker code: drains are requested by task name over the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio
from celery import Celery
from pydantic import ValidationError

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

DRAIN_TASK = "convdispatch.drain"
KICK_GRACE_MS = 10_000
log = logging.getLogger(__name__)
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


def field_errors(exc: ValidationError, index: int | None = None) -> list[FieldError]:
    """Pydantic's errors as `FieldError`s named by the platform's dotted JSON path."""
    return [
        FieldError(".".join(str(p) for p in e["loc"]) or "event", e["msg"], index)
        for e in exc.errors(include_url=False)
    ]


class Dispatcher:
    """Enqueues events for delivery. Thread-safe; create one per process and reuse it."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._redis: redis.Redis | None = None
        self._aredis: redis.asyncio.Redis | None = None
        self._celery: Celery | None = None

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
            script = lua("dispatcher", "enqueue.lua")
            result = await self._aredis.eval(script, len(keys_), *keys_, *args)
        await asyncio.to_thread(self._kick, plan, result)

    @property
    def redis(self) -> redis.Redis:
        """The synchronous Redis client, connected on first use."""
        if self._redis is None:
            self._redis = connect(self.settings.redis_url)
        return self._redis

    def store(self, plan: Plan) -> None:
        """Append a validated plan to its streams atomically, then request drains."""
        if not plan.groups:
            return
        keys_, args = self._script_args(plan)
        with translate_redis_errors(), _backpressure(list(plan.groups)):
            result = self.redis.eval(lua("dispatcher", "enqueue.lua"), len(keys_), *keys_, *args)
        self._kick(plan, result)

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
        plan = Plan()
        for index, raw in enumerate(events):
            try:
                name, model = self._validate(raw, destination, index)
            except InvalidEventError as exc:
                plan.rejected.extend(exc.errors)
                continue
            _add(plan, name, model)
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
            model = raw
        else:
            name = self._resolve(None, destination)
            platform = self.settings.destination(name).platform
            try:
                model = model_for(platform).model_validate(raw)
            except ValidationError as exc:
                raise InvalidEventError(field_errors(exc, index)) from None
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
            table = self.settings.platform(self.settings.destination(name).platform)
            keys_ += [keys.stream(name), keys.kick(name), keys.kick_now(name)]
            ttl_ms = int(table.max_wait_s * 1000) + KICK_GRACE_MS
            args += [table.max_backlog, table.batch_size, ttl_ms, len(rows)]
            for event_id, payload, at_ms in rows:
                # Bytes pass through redis-py's encoder untouched: this loop is the hot path.
                args += [payload, event_id.encode(), b"%d" % at_ms]
        return keys_, args

    def _kick(self, plan: Plan, result: Sequence[Sequence[int]]) -> None:
        for name, (_, kick) in zip(plan.groups, result, strict=True):
            if not kick:
                continue
            table = self.settings.platform(self.settings.destination(name).platform)
            try:
                self.request_drain(name, 0.0 if kick == 2 else table.max_wait_s)
            except Exception as exc:
                # The receipt stands: beat's sweep drains the destination within a second.
                log.warning("could not request a drain of %s: %s", name, type(exc).__name__)

    def request_drain(self, destination: str, countdown_s: float = 0.0) -> None:
        """Ask a worker of the destination's platform to drain it (by task name)."""
        if self._celery is None:
            self._celery = Celery("convdispatch-producer", broker=self.settings.redis_url)
        platform = self.settings.destination(destination).platform
        self._celery.send_task(
            DRAIN_TASK,
            args=[destination],
            queue=self.settings.queue(platform),
            countdown=countdown_s or None,
        )


def _add(plan: Plan, destination: str, model: PlatformEvent) -> None:
    event_id, payload = model.to_payload()
    plan.groups.setdefault(destination, []).append((event_id, payload, model.happened_at_ms()))
    plan.receipts.append(Receipt(event_id, destination))


@contextmanager
def _backpressure(destinations: list[str]) -> Iterator[None]:
    """Turn the script's BACKPRESSURE reply into `BackpressureError` naming the destination."""
    try:
        yield
    except redis.ResponseError as exc:
        words = str(exc).split()
        if words[:1] != ["BACKPRESSURE"]:
            raise
        index, backlog, cap = (int(w) for w in words[1:4])
        raise BackpressureError(destinations[index - 1], backlog, cap) from None
