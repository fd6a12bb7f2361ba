"""The one place where validation failures become `InvalidEventError`.

Pydantic's `ValidationError`, and the `OverflowError`/`TypeError`/`ValueError` a value can
raise on its way in, never reach the caller: every public model and entry point raises
`InvalidEventError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Self

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from dispatcher.errors import FieldError, InvalidEventError

MAX_EPOCH_S = 1e15  # far past any time; keeps arithmetic on it exact and in range


def field_errors(exc: ValidationError, index: int | None = None) -> list[FieldError]:
    """Pydantic's errors as `FieldError`s named by the platform's dotted JSON path."""
    return [
        FieldError(".".join(str(p) for p in e["loc"]) or "event", e["msg"], index)
        for e in exc.errors(include_url=False)
    ]


@contextmanager
def refusing(index: int | None = None, where: str = "event") -> Iterator[None]:
    """Raise `InvalidEventError` for whatever validating the block's input raised."""
    try:
        yield
    except InvalidEventError as exc:
        if index is None:
            raise
        raise InvalidEventError([replace(e, index=index) for e in exc.errors]) from None
    except ValidationError as exc:
        raise InvalidEventError(field_errors(exc, index)) from None
    except (OverflowError, TypeError, ValueError) as exc:
        raise InvalidEventError(
            [FieldError(where, str(exc) or type(exc).__name__, index)]
        ) from None


def located(model: str, field: str, message: str, value: object) -> ValidationError:
    """A validation error located at `field`, for checks that span fields."""
    error = PydanticCustomError("value_error", "{reason}", {"reason": message})
    return ValidationError.from_exception_data(
        model, [InitErrorDetails(type=error, loc=(field,), input=value)]
    )


def epoch_seconds(value: float) -> float:
    """`value` if it is a finite epoch time in seconds that a datetime can hold."""
    if not math.isfinite(value) or not 0 <= value <= MAX_EPOCH_S:
        raise ValueError("must be a finite, non-negative epoch time in seconds")
    return value


_VALIDATING: ContextVar[bool] = ContextVar("validating", default=False)


class Refusing(BaseModel):
    """A model whose construction raises `InvalidEventError`, never pydantic's errors."""

    def __init__(self, /, **data: Any) -> None:
        if _VALIDATING.get():  # pydantic calls a custom __init__ from model_validate too
            super().__init__(**data)
            return
        with refusing():
            super().__init__(**data)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        token = _VALIDATING.set(True)
        try:
            with refusing():
                return super().model_validate(obj, **kwargs)
        finally:
            _VALIDATING.reset(token)
