"""What every platform's event model provides to the enqueue client."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import AfterValidator, ConfigDict
from pydantic_core import PydanticCustomError

from dispatcher.errors import FieldError, InvalidEventError
from dispatcher.identity import any_personal_kind, masked, personal_kind, personal_label
from dispatcher.national import national_phone_in_json
from dispatcher.personal_names import names_in_query
from dispatcher.reading import HTML_REFERENCE_BYTES
from dispatcher.validation import Refusing

if TYPE_CHECKING:
    from dispatcher.settings import Destination


# Every platform model and its parts: no unknown field, aliases accepted, strings
# stripped, NaN and infinities refused, and a model changed after validation checked again.
STRICT = ConfigDict(
    extra="forbid",
    populate_by_name=True,
    str_strip_whitespace=True,
    allow_inf_nan=False,
    revalidate_instances="always",
)
# A percent-escape of "+", "@", "%" or of a byte of a non-ASCII character.
_ESCAPED = re.compile(rb"%(?:2[Bb5]|40|[89A-Fa-f][0-9A-Fa-f])")  # %25: escaped again
FUTURE_SKEW_MS = 5 * 60 * 1000  # platforms tolerate small clock differences, not more
IN_FREE_TEXT = "holds {} data in free text: send it in a hashed field instead"


def free_text(value: str) -> str:
    """`value`, unless it holds an email address or a phone number, international or
    national (`any_personal_kind`: what the search of the whole event at `to_payload`
    finds too, so building the model refuses it already), or a person's name as a URL
    parameter (`?first_name=Jane`)."""
    kind = any_personal_kind(value)
    found = personal_label(kind) if kind else _name_in_url(value)
    if found is not None:
        reason = IN_FREE_TEXT.format(found)
        raise PydanticCustomError("value_error", "{reason}", {"reason": reason})
    return value


def _name_in_url(value: str) -> str | None:
    """How an error names a person's name in a URL parameter of `value`, if one is there."""
    query = "=" in value or ("%3" in value and "%3d" in value.lower())  # `%3D`: an escaped "="
    parameter = next(names_in_query(value), None) if query else None
    return None if parameter is None else f"name (URL parameter {masked(parameter)!r})"


# Text the caller writes freely (a product name, a search, a page's URL, a note): it is
# searched for a national number and a name in a URL as it is validated, so the error
# names the caller's own field (a Conversion's `contents.0.name`). The search of the whole
# body in `to_payload` finds emails, phone numbers and URL names in every other field.
FreeText = Annotated[str, AfterValidator(free_text)]


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000


class PlatformEvent(Refusing):
    """Base of the platform models: strict, aliased like the platform's JSON, no extras.
    Construction raises `InvalidEventError`; NaN and infinities are refused everywhere."""

    model_config = STRICT

    platform: ClassVar[str]
    # The platform's JSON name of its deduplication id; None where the API has none
    # (the id then lives only beside the payload in Redis, for receipts and dead letters).
    event_id_field: ClassVar[str | None]
    # The field that says when the conversion happened, as an error names it.
    time_field: ClassVar[str]

    def happened_at_ms(self) -> int:
        """When the conversion happened, epoch milliseconds (bounds the retry budget)."""
        raise NotImplementedError

    def given_event_id(self) -> str | None:
        """The caller's event id, if any."""
        raise NotImplementedError

    def id_salt(self) -> bytes:
        """What, beside the payload, tells this event from another when its id is derived
        from its content (a field that is not sent)."""
        return b""

    def policy_errors(self, destination: Destination) -> list[tuple[str, str]]:
        """Fields this destination's settings forbid, as (field, message) pairs."""
        return []

    def window_errors(self, window_s: float) -> list[tuple[str, str]]:
        """The time field, as (field, message) pairs, if the conversion happened `window_s`
        ago or longer: the configured `acceptance_window_s`, past which the worker would
        dead-letter the event as expired at once."""
        if self.happened_at_ms() + window_s * 1000 > now_ms():
            return []
        setting = f"{self.platform}.acceptance_window_s"
        return [(self.time_field, f"is older than the {window_s / 86_400:g}-day {setting}")]

    def to_payload(self) -> tuple[str, bytes]:
        """The event as the platform's JSON element, and its event id.

        When the caller gave no id, the id is derived from the event's content, so a
        producer that sends the same event twice gets the same id and the platform
        deduplicates it.
        """
        # The serializer itself: model_dump_json's wrapper costs a tenth of the call.
        # Without an "@", a "+", a JSON escape (which may stand for one, or for a hidden or
        # non-ASCII character) or a non-ASCII byte, it holds no email or phone number in
        # free text: no full check (`%20` in a URL is not a reason for one). One-byte
        # searches: `b"\\u" in body` alone costs three of them.
        body = self.__pydantic_serializer__.to_json(self, by_alias=True, exclude_none=True)
        if b"\\" in body:  # an escape hides its character from a search: walk the values
            refuse_personal_text(json.loads(body))
        elif (
            b"@" in body
            or b"+" in body
            or not body.isascii()
            or (b"%" in body and _ESCAPED.search(body) is not None)
            or (b"&" in body and HTML_REFERENCE_BYTES.search(body) is not None)
        ) and personal_kind(body.decode()):
            # One search of the whole text (a match in a string is one in the text); only
            # a match costs the walk that names the fields.
            refuse_personal_text(json.loads(body))
        elif national_phone_in_json(body) or (  # a national number in any field, ids too
            (
                b"=" in body or (b"%3" in body and b"%3d" in body.lower()) or b"&#" in body
            )  # or `?first_name=Jane`, escaped too (`%3D`, `&#61;`)
            and any(names_in_query(body.decode()))
        ):
            refuse_personal_text(json.loads(body))
        event_id = self.given_event_id()
        if event_id is not None:
            return event_id, body
        event_id = hashlib.sha256(body + self.id_salt()).hexdigest()[:32]
        if self.event_id_field is None:
            return event_id, body
        tail = b"," if len(body) > 2 else b""
        return event_id, body[
            :-1
        ] + tail + f'"{self.event_id_field}":{json.dumps(event_id)}}}'.encode()


def check_event_time(at_ms: int, window_ms: int | None = None) -> int:
    """Return `at_ms` if it lies in (now - window, now + skew], else raise ValueError;
    `window_ms` is the age limit the platform documents, if it documents one (the
    configured `acceptance_window_s` is checked at enqueue: `window_errors`)."""
    now = now_ms()
    if at_ms > now + FUTURE_SKEW_MS:
        raise ValueError("is in the future")
    if window_ms is not None and at_ms <= now - window_ms:
        raise ValueError(f"is older than the platform's {window_ms // 86_400_000}-day window")
    return at_ms


def aware_to_epoch(value: object, per_second: int = 1) -> object:
    """An aware datetime as epoch seconds (or ms with `per_second=1000`); else `value`.

    For `mode="before"` validators of the platforms' time fields, which take either.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("datetime must be timezone-aware")
        return int(value.timestamp() * per_second)
    if isinstance(value, bool):  # an int to Python, never a time
        raise ValueError("must be an epoch time or a timezone-aware datetime, not a boolean")
    return value


def not_personal(value: str | None) -> str | None:
    """A field validator for text that is stored but not sent (an event id of a platform
    without one): the free-text check of `to_payload` never sees it, so it is here."""
    kind = None if value is None else any_personal_kind(value) or _name_in_url(value)
    if kind:
        raise ValueError(f"holds {kind} data: an event id must not carry personal data")
    return value


def refuse_personal_text(payload: object) -> None:
    """Raise `InvalidEventError` naming every string of the outgoing event that holds an
    email address or a phone number: hashed fields hold digests, so what is found here
    sits in free text, where it would reach Redis and the platform raw."""
    found = [
        FieldError(path, IN_FREE_TEXT.format(kind)) for path, kind in _personal_strings(payload, "")
    ]
    if found:
        raise InvalidEventError(found)


def _personal_strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        kind = any_personal_kind(value)
        if kind:
            yield path or "event", personal_label(kind)
        elif (name := _name_in_url(value)) is not None:
            yield path or "event", name
    elif isinstance(value, dict):
        for key, item in value.items():
            # A name the caller made up (vNative dimensions), shown masked if personal
            where = f"{path}.{masked(key)}" if path else masked(key)
            kind = personal_kind(key)
            if kind:
                yield where, personal_label(kind)
            elif (name := _name_in_url(key)) is not None:  # the name, not the key: masked
                yield (f"{path}.<url>" if path else "<url>"), name
            yield from _personal_strings(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _personal_strings(item, f"{path}.{i}" if path else str(i))
