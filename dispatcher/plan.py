"""What one producer call carries to the writer: its validated events grouped by
destination (`Plan`, `plan_conversions`), where they go (`target_of`), and the checks of
a call's arguments before any event is read."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from dispatcher.conversion import Conversion
from dispatcher.destination import destination_id
from dispatcher.errors import ConfigurationError, FieldError, InvalidEventError
from dispatcher.events import PlatformEvent
from dispatcher.fanout import fan_out
from dispatcher.receipts import BulkReceipt, FanOutReceipt, Receipts
from dispatcher.settings import Destination, Settings
from dispatcher.validation import REFUSED, refusal
from dispatcher.writer import CHUNK_EVENTS, Refused

EventInput = PlatformEvent | Mapping[str, Any]
Target = tuple[str, Destination]  # a destination id and its settings, resolved once a call
# (input platform, destination) -> the target, or why a routed destination takes nothing
Targets = dict[tuple[str | None, str | None], Target | ConfigurationError]


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


def target_of(settings: Settings, platform: str | None, destination: str | None) -> Target:
    """Where events of `platform` go (`destination`, or the one destination configured for
    the platform; for a dict, which names no platform, the one destination configured),
    checked to take new events; else `ConfigurationError`."""
    if destination is None:
        candidates = [n for n, d in settings.destinations.items() if platform in (None, d.platform)]
        if len(candidates) != 1:
            raise ConfigurationError(
                f"pass destination=: {len(candidates)} destinations are configured"
                + (f" for {platform}" if platform else " and a dict names no platform")
            )
        destination = candidates[0]
    dest = settings.destination(destination)
    if not dest.enabled or dest.draining:
        why = "is disabled" if not dest.enabled else "is being removed (draining)"
        raise ConfigurationError(f"destination {destination!r} {why}: it takes no new events")
    if platform is not None and platform != dest.platform:
        raise ConfigurationError(
            f"a {platform} event cannot go to {dest.platform} destination {destination!r}"
        )
    return destination, dest


def plan_conversions(
    conversions: Iterable[Conversion],
    settings: Settings,
    validate: Callable[[dict[str, Any], str], PlatformEvent],
    rule_urn: Callable[[str, str], str | None],
    first: int | None = None,
) -> tuple[Plan, list[FanOutReceipt]]:
    """The events `conversions` fan out to (`fan_out`, each checked by `validate`) and a
    receipt per conversion; every bad conversion is named (with its index from `first` in
    bulk calls) in one `InvalidEventError`."""
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
            events, skipped = fan_out(conversion, settings, validate, rule_urn)
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


@contextlib.contextmanager
def one_event() -> Iterator[None]:
    """A call of one event (`enqueue`): its errors name fields without a bulk index."""
    try:
        yield
    except InvalidEventError as exc:
        errors = [dataclasses.replace(e, index=None) for e in exc.errors]
        raise InvalidEventError(errors) from None


CONVERSION_ITEM = "a Conversion goes where its routes say: use enqueue_conversions"


def not_a_conversion(event: object) -> None:
    if isinstance(event, Conversion):
        raise ConfigurationError(
            "a Conversion goes to the destinations its routes name: use enqueue_conversion"
        )


def check_events(events: object, name: str = "events") -> None:
    if isinstance(events, str | bytes | Mapping | PlatformEvent | Conversion) or not isinstance(
        events, Iterable
    ):
        message = f"must be an iterable of {name}, not {type(events).__name__}"
        raise InvalidEventError([FieldError(name, message)])


def one_chunk(events: object) -> bool:
    return isinstance(events, Sized) and len(events) <= CHUNK_EVENTS


def check_destination(destination: object) -> None:
    if destination is not None:
        destination_id(destination)


def route(item: object) -> tuple[str, EventInput]:
    """A routed item as (destination, event), or `InvalidEventError` naming `item`."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        kind = type(item[0]).__name__
        message = f"must be a (destination, event) pair with a destination id (str), not {kind}"
    else:
        message = f"must be a (destination, event) pair, not {type(item).__name__}"
    raise InvalidEventError([FieldError("item", message)])


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def collect(out: BulkReceipt, plan: Plan, writing: Future[Refused]) -> None:
    collect_now(out, plan, writing.result())


def collect_now(out: BulkReceipt, plan: Plan, refused: Refused) -> None:
    out.receipts.extend(plan.receipts, skip=refused)
    out.rejected += plan.rejected
    if refused:
        raise next(iter(refused.values()))


def skip_refused(fanned: list[FanOutReceipt], refused: Refused) -> None:
    """A destination at its cap does not hold up the others: it is skipped, with why."""
    for receipt in fanned:
        for r in [r for r in receipt.receipts if r.destination in refused]:
            receipt.receipts.remove(r)
            receipt.skipped.append((r.destination, f"backpressure: {refused[r.destination]}"))
