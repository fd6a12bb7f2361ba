"""The one place where validation failures become `InvalidEventError`.

Pydantic's `ValidationError`, and the `OverflowError`/`TypeError`/`ValueError` a value can
raise on its way in, never reach the caller: every public model and entry point raises
`InvalidEventError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any, Self

from pydantic import BaseModel, ValidationError
from pydantic._internal._model_construction import ModelMetaclass  # every BaseModel's metaclass
from pydantic_core import InitErrorDetails, PydanticCustomError

from dispatcher.errors import FieldError, InvalidEventError
from dispatcher.identity import masked

MAX_EPOCH_S = 1e15  # far past any time; keeps arithmetic on it exact and in range


def field_errors(exc: ValidationError, index: int | None = None) -> list[FieldError]:
    """Pydantic's errors as `FieldError`s named by the platform's dotted JSON path (a
    made-up key that is an email address or a phone number is shown masked)."""
    return [
        FieldError(".".join(masked(str(p)) for p in e["loc"]) or "event", e["msg"], index)
        for e in exc.errors(include_url=False)
    ]


@contextmanager
def refusing(index: int | None = None, where: str = "event") -> Iterator[None]:
    """Raise `InvalidEventError` for whatever validating the block's input raised."""
    try:
        yield
    except REFUSED as exc:
        raise refusal(exc, index, where) from None


def located(model: str, field: str, message: str, value: object) -> ValidationError:
    """A validation error located at `field`, for checks that span fields."""
    error = PydanticCustomError("value_error", "{reason}", {"reason": message})
    return ValidationError.from_exception_data(
        model, [InitErrorDetails(type=error, loc=(field,), input=value)]
    )


def epoch_seconds(value: float) -> float:
    """`value` if it is a finite epoch time in seconds that a datetime can hold."""
    # Compared first: an int too large for a float makes `isfinite` raise OverflowError.
    if not 0 <= value <= MAX_EPOCH_S or not math.isfinite(value):
        raise ValueError("must be a finite, non-negative epoch time in seconds")
    return value


def refusal(exc: Exception, index: int | None = None, where: str = "event") -> InvalidEventError:
    """`exc`, raised while validating input, as the `InvalidEventError` to raise instead
    (the hot path's form of `refusing`: an `except` clause costs less than a `with`)."""
    if isinstance(exc, InvalidEventError):
        if index is None:
            return exc
        return InvalidEventError([replace(e, index=index) for e in exc.errors])
    if isinstance(exc, ValidationError):
        return InvalidEventError(field_errors(exc, index))
    return InvalidEventError([FieldError(where, str(exc) or type(exc).__name__, index)])


MAX_EXPONENT = 30  # an amount past 10**30 (or with digits below 10**-30) is no amount


def decimal_text(value: object) -> object:
    """A number as the platforms write an amount: digits and a dot (`100`, never `1E+2`),
    for an int, float or Decimal; anything else as given, for the field to check.

    Raises:
        ValueError: not finite, or too large or too precise to be an amount (formatting
            `Decimal("1e999999999")` would build a billion digits).
    """
    if isinstance(value, str):  # kept as written ("49.90"), if it is an amount in range
        if len(value) <= MAX_EXPONENT and "e" not in value and "E" not in value:
            return value  # too short to leave the range without an exponent
        try:
            given = Decimal(value.strip())
        except InvalidOperation:
            return value  # not a number: the field's pattern says so
        if given.is_finite():
            decimal_text(given)
        return value
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
        return value
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError("must be a finite number")
    if number and not -MAX_EXPONENT <= number.adjusted() <= MAX_EXPONENT:
        raise ValueError("is out of range for an amount")
    if number.as_tuple().exponent < -MAX_EXPONENT:  # type: ignore[operator]
        raise ValueError(
            "has too many decimal places for an amount (a Decimal made from a float? "
            "write Decimal('49.9'), not Decimal(49.9))"
        )
    return format(number, "f")


REFUSED = (InvalidEventError, ValidationError, OverflowError, TypeError, ValueError)


class _RefusingMeta(ModelMetaclass):
    """Makes `Model(...)` raise `InvalidEventError`. A metaclass and not an `__init__`:
    pydantic validates a model with a custom `__init__` through that Python method, which
    would double the cost of every `model_validate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except REFUSED as exc:
            raise refusal(exc) from None


class Refusing(BaseModel, metaclass=_RefusingMeta):
    """A model whose construction raises `InvalidEventError`, never pydantic's errors."""

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        with refusing():
            return super().model_validate(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        with refusing():
            return super().model_validate_json(json_data, **kwargs)

    @classmethod
    def model_validate_strings(cls, obj: Any, **kwargs: Any) -> Self:
        with refusing():
            return super().model_validate_strings(obj, **kwargs)
