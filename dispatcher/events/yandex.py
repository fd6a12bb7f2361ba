"""Yandex Metrica offline conversions: one row of the CSV file an upload carries.

Source: seed 002 ("Uploading offline conversions") and the Yandex section of PLATFORMS.md.
The stored payload is a JSON object whose keys are exactly the CSV column names, so the
adapter writes it out as a CSV row without knowing the model. Nothing is hashed: Yandex
matches on its own identifiers (ClientId, Yclid) or the site's (UserId, PurchaseId).
Yandex has no deduplication id; re-uploading a row overwrites its revenue.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from dispatcher.currencies import Currency
from dispatcher.events.base import PlatformEvent, aware_to_epoch, not_personal
from dispatcher.validation import decimal_text

if TYPE_CHECKING:
    from dispatcher.settings import Destination

# Conversions link only to visits of the past 21 days; older rows would be dropped.
WINDOW_S = 21 * 86_400
# The identifier column each `Destination.client_id_type` takes.
ID_COLUMNS = {
    "CLIENT_ID": "ClientId",
    "USER_ID": "UserId",
    "YCLID": "Yclid",
    "PURCHASE_ID": "PurchaseId",
}
# Identifier columns, in CSV column order, and the model attribute holding each.
_ATTRS = {
    "ClientId": "client_id",
    "UserId": "user_id",
    "Yclid": "yclid",
    "PurchaseId": "purchase_id",
}
# Yandex does not document quoting in its CSV reader, so a cell must never need any.
_UNQUOTABLE = frozenset(',"\r\n')


class YandexOfflineConversion(PlatformEvent):
    """One offline conversion for a Metrica goal, aliased like the CSV columns.

    Exactly one identifier column (`ClientId`, `UserId`, `Yclid` or `PurchaseId`) is
    given, and it must be the one the destination's `client_id_type` names. `DateTime`
    takes Unix seconds or an aware `datetime`, and must lie within the past 21 days.
    """

    platform: ClassVar[str] = "yandex"
    time_field: ClassVar[str] = "DateTime"
    event_id_field: ClassVar[str | None] = None

    client_id: str | None = Field(default=None, alias="ClientId")
    user_id: str | None = Field(default=None, alias="UserId")
    yclid: str | None = Field(default=None, alias="Yclid")
    purchase_id: str | None = Field(default=None, alias="PurchaseId")
    target: str = Field(alias="Target")
    event_id: Annotated[str | None, AfterValidator(not_personal)] = Field(
        default=None, min_length=1, max_length=128, exclude=True
    )
    date_time: int = Field(alias="DateTime")
    price: str | None = Field(default=None, alias="Price")
    currency: Currency | None = Field(default=None, alias="Currency")

    @field_validator("client_id", "user_id", "yclid", "purchase_id", "target")
    @classmethod
    def _plain_cell(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must not be empty")
        if _UNQUOTABLE.intersection(value):
            raise ValueError("must not contain commas, double quotes or line breaks (a CSV cell)")
        return value

    @field_validator("date_time", mode="before")
    @classmethod
    def _datetime_to_s(cls, value: object) -> object:
        return aware_to_epoch(value)

    @field_validator("date_time")
    @classmethod
    def _in_window(cls, value: int) -> int:
        now_s = time.time()
        # No skew allowance: Yandex drops a row whose DateTime it has not reached yet.
        if value > now_s:
            raise ValueError("is in the future (Unix seconds; Yandex takes past conversions)")
        if value <= now_s - WINDOW_S:
            raise ValueError(f"is older than Yandex's {WINDOW_S // 86_400}-day window")
        return value

    @field_validator("price", mode="before")
    @classmethod
    def _price_to_str(cls, value: object) -> object:
        return decimal_text(value)

    @field_validator("price")
    @classmethod
    def _dot_decimal(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.split(".")
        if len(digits) > 2 or not all(part.isascii() and part.isdigit() for part in digits):
            raise ValueError("must be a non-negative decimal with a dot separator, e.g. 49.90")
        return value

    @model_validator(mode="after")
    def _one_identifier(self) -> YandexOfflineConversion:
        given = self._identifiers()
        if len(given) == 1:
            return self
        if not given:
            problems = [
                _error(
                    "/".join(ID_COLUMNS.values()),
                    "one identifier column is required: ClientId, UserId, Yclid or "
                    "PurchaseId (the one the counter's client_id_type names)",
                )
            ]
        else:
            message = f"give exactly one identifier column; got {', '.join(given)}"
            problems = [_error(column, message) for column in given[1:]]
        # A ValidationError keeps each problem's field name; a ValueError would say "event".
        raise ValidationError.from_exception_data(type(self).__name__, problems)

    def _identifiers(self) -> list[str]:
        return [column for column, attr in _ATTRS.items() if getattr(self, attr) is not None]

    def id_column(self) -> str:
        """The CSV name of the identifier column this event fills."""
        return self._identifiers()[0]

    def happened_at_ms(self) -> int:
        return self.date_time * 1000

    def given_event_id(self) -> str | None:
        # Yandex has no event id: the caller's own (never sent), else one derived from the
        # row, names receipts and dead letters and is the producer's idempotency key.
        return self.event_id

    def policy_errors(self, destination: Destination) -> list[tuple[str, str]]:
        expected = ID_COLUMNS[destination.client_id_type]
        given = self.id_column()
        if given == expected:
            return []
        return [
            (
                given,
                f"the destination's counter takes client_id_type {destination.client_id_type}, "
                f"so its uploads identify users by {expected}, not {given}",
            )
        ]


def _error(field: str, message: str) -> InitErrorDetails:
    kind = PydanticCustomError("yandex_identifier", message)
    return InitErrorDetails(type=kind, loc=(field,), input=None)


EVENT = YandexOfflineConversion
