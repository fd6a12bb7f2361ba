"""vNative (now Trackier) conversion import, one element of `POST /advertiser/conversion-import`.

Source: seed 000 and PLATFORMS.md. An element is `click_id` (required), optional `sub1` to
`sub10` and optional `custom_dimensions`; `send_postback` belongs to the whole call and is
set per destination (`Destination.send_postback`), not per event.

Personal data never reaches Redis raw: the values of custom dimensions named as personal
data (`personal_hasher`), or whose value is an email address or an
international phone number, are normalised and SHA-256 hashed here (digests pass through).

vNative takes no event time and no deduplication id. The optional `conversion_time`
is ours: it is never sent, it only bounds how long the event may be retried. Trackier
documents no maximum age: this project's `vnative.acceptance_window_s` (30 days by
default) is the bound, and `enqueue` refuses an older conversion (`window_errors`) that
the worker would dead-letter as expired at once. Without it the time of validation is
used.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from dispatcher.events.base import (
    FUTURE_SKEW_MS,
    FreeText,
    PlatformEvent,
    aware_to_epoch,
    free_text,
    not_personal,
    now_ms,
)
from dispatcher.identity import (
    hash_by_value,
)
from dispatcher.national import holds_national_phone
from dispatcher.personal_names import KEEPING, hash_named, hasher_of
from dispatcher.validation import epoch_seconds


def _dimension_value(value: object) -> str | int | float:
    # bool is an int to Python, but not a string or number to vNative.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    raise ValueError("must be a string or a number")


DimensionValue = Annotated[str | int | float, PlainValidator(_dimension_value)]


def _epoch_s(value: object) -> object:
    """Epoch seconds: what a model validated once holds, so validating it again (a model
    handed to `enqueue`) leaves it as it is."""
    if isinstance(value, datetime):
        aware_to_epoch(value)  # refuses a naive one
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch_seconds(value)
    raise ValueError("must be a timezone-aware datetime or epoch seconds")


class VNativeConversion(PlatformEvent):
    """One conversion to import, keyed by the click vNative recorded.

    `conversion_time` (a timezone-aware `datetime` or epoch seconds) is optional and is not
    sent; it may not lie in the future nor be older than 30 days. `event_id` is optional
    and not sent either: the receipt's id and the idempotency key (else one derived from
    the content and the time).
    """

    platform: ClassVar[str] = "vnative"
    time_field: ClassVar[str] = "conversion_time"
    event_id_field: ClassVar[str | None] = None

    click_id: str = Field(min_length=1)
    # The seed's sample shows sub1; Trackier documents sub1 to sub10.
    sub1: FreeText | None = None
    sub2: FreeText | None = None
    sub3: FreeText | None = None
    sub4: FreeText | None = None
    sub5: FreeText | None = None
    sub6: FreeText | None = None
    sub7: FreeText | None = None
    sub8: FreeText | None = None
    sub9: FreeText | None = None
    sub10: FreeText | None = None
    custom_dimensions: dict[str, DimensionValue] | None = None
    conversion_time: float | None = Field(default=None, ge=0, exclude=True)  # epoch s, not sent
    # vNative takes no event id: the caller's own, never sent, names the receipt and is the
    # producer's idempotency key (two conversions of one click stay two).
    event_id: Annotated[str | None, AfterValidator(not_personal)] = Field(
        default=None, min_length=1, max_length=128, exclude=True
    )
    _validated_at_ms: int = PrivateAttr(default_factory=now_ms)

    @field_validator("conversion_time", mode="before")
    @classmethod
    def _to_seconds(cls, value: object) -> object:
        return None if value is None else _epoch_s(value)

    @field_validator("conversion_time")
    @classmethod
    def _not_in_future(cls, value: float | None) -> float | None:
        if value is not None and value * 1000 > now_ms() + FUTURE_SKEW_MS:
            raise ValueError("is in the future (epoch seconds are expected, not milliseconds)")
        return value

    @field_validator("custom_dimensions")
    @classmethod
    def _hash_personal(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        hashed: dict[str, Any] = {}
        errors: list[InitErrorDetails] = []
        for name, raw in value.items():
            hasher = hasher_of(name)
            try:
                if not name.strip():
                    raise ValueError("a dimension name must not be empty")
                if holds_national_phone(name):
                    raise ValueError("a dimension name must not hold a phone number")
                if hasher is None and isinstance(raw, str):
                    # Named like anything, holding an email or phone number: hashed too.
                    by_value = hash_by_value(raw)
                    hashed[name] = free_text(raw) if by_value is None else by_value
                elif hasher is None:
                    hashed[name] = raw
                elif hasher in KEEPING:  # a number too: 447700900123 is a phone number
                    text = _number_text(raw)  # (447700900123.0 too: a spreadsheet's)
                    kept = raw if text is None else hasher(text)
                    hashed[name] = raw if kept == text else kept
                else:
                    hashed[name] = hash_named(hasher, raw)
            except ValueError as exc:
                error = PydanticCustomError("value_error", "{reason}", {"reason": str(exc)})
                errors.append(InitErrorDetails(type=error, loc=(name,), input=raw))
        if errors:
            # Raised as a ValidationError so each error is located at its dimension.
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return hashed

    def happened_at_ms(self) -> int:
        if self.conversion_time is None:
            return self._validated_at_ms
        return int(self.conversion_time * 1000)  # as before: ids derived from it stay

    def given_event_id(self) -> str | None:
        return self.event_id

    def id_salt(self) -> bytes:
        # Without an id, the content names the event: its time too, which is not sent.
        return b"" if self.conversion_time is None else b"|%d" % self.happened_at_ms()


def _number_text(raw: object) -> str | None:
    """`raw` as text when it is a string or a whole number (an int, or a float holding
    one as a spreadsheet export gives: 447700900123.0), else None."""
    if isinstance(raw, str):
        return raw
    if type(raw) is int:
        return str(raw)
    if type(raw) is float and raw.is_integer() and abs(raw) < 1e16:
        return str(int(raw))
    return None


EVENT = VNativeConversion
