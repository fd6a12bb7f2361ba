"""What an enqueue returns: a receipt per stored event, in bulk as compact sequences."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, overload

from dispatcher.errors import FieldError


class Receipt(NamedTuple):
    """Proof that one event is stored durably and will be delivered or dead-lettered."""

    event_id: str
    destination: str


class Receipts(Sequence[Receipt]):
    """The receipts of a bulk call, a read-only sequence of `Receipt`.

    Held as two lists of strings and made on access: a `Receipt` (a tuple subclass) is an
    object the garbage collector tracks for as long as it lives, and 100,000 of them cost
    the producer one or two full collections per 100,000 events, each scanning the whole
    heap; two lists are two objects. Equal to any sequence with the same receipts.
    """

    __slots__ = ("destinations", "event_ids")

    def __init__(self, receipts: Iterable[Receipt] = ()) -> None:
        self.event_ids: list[str] = []
        self.destinations: list[str] = []
        for event_id, destination in receipts:
            self.event_ids.append(event_id)
            self.destinations.append(destination)

    def __len__(self) -> int:
        return len(self.event_ids)

    @overload
    def __getitem__(self, index: int) -> Receipt: ...

    @overload
    def __getitem__(self, index: slice) -> list[Receipt]: ...

    def __getitem__(self, index: int | slice) -> Receipt | list[Receipt]:
        if isinstance(index, slice):
            return list(map(Receipt, self.event_ids[index], self.destinations[index]))
        return Receipt(self.event_ids[index], self.destinations[index])

    def __iter__(self) -> Iterator[Receipt]:
        return map(Receipt, self.event_ids, self.destinations)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        return repr(list(self))

    def extend(self, other: Receipts, skip: Mapping[str, object] | None = None) -> None:
        """Append `other`'s receipts, but none of a destination in `skip`."""
        if not skip:
            self.event_ids += other.event_ids
            self.destinations += other.destinations
            return
        for event_id, destination in zip(other.event_ids, other.destinations, strict=True):
            if destination not in skip:
                self.event_ids.append(event_id)
                self.destinations.append(destination)


@dataclass
class BulkReceipt:
    """What `enqueue_many` stored, and (with `on_invalid="skip"`) what it refused."""

    receipts: Receipts = field(default_factory=Receipts)
    rejected: list[FieldError] = field(default_factory=list)


@dataclass
class FanOutReceipt:
    """What one platform-neutral `Conversion` became: a receipt per destination, and the
    destinations skipped, each with the reason (missing identifiers, a platform rule)."""

    receipts: list[Receipt] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
