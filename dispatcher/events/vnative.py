"""vNative (now Trackier) conversion import, one element of `POST /advertiser/conversion-import`.

Source: seed 000 and PLATFORMS.md. An element is `click_id` (required), optional `sub1` to
`sub10` and optional `custom_dimensions`; `send_postback` belongs to the whole call and is
set per destination (`Destination.send_postback`), not per event.

Personal data never reaches Redis raw: the values of custom dimensions named as personal
data (`personal_hasher`), or whose value is an email address or an
international phone number, are normalised and SHA-256 hashed here (digests pass through).

vNative takes no event time and no deduplication id. The optional `conversion_time`
is ours: it is never sent, it only bounds how long the event may be retried (the
platform's `acceptance_window_s`). Without it the time of validation is used.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable
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
    no_national_phone,
    not_personal,
    now_ms,
)
from dispatcher.identity import (
    hash_by_value,
    hash_email,
    hash_name,
    hash_phone,
    is_email,
    number_like,
    sha256_hex,
)
from dispatcher.national import holds_national_phone
from dispatcher.validation import epoch_seconds

# Dimension names (compared after `dimension_key`) whose values are personal data, and how
# each is normalised before hashing. The seed's sample sends first_name and last_name.
_EMAIL_WORDS = {"email", "mail", "emailaddress", "mailaddress", "courriel", "correo", "почта"}
_PHONE_WORDS = {"phone", "mobile", "tel", "telephone", "msisdn", "cell", "phonenumber", "fax"}
_PHONE_WORDS |= {"whatsapp", "telefono", "telefone", "telefon", "handy", "телефон"}
_PHONE_WORDS |= {"cellphone", "mobilephone", "homephone", "workphone", "phoneno"}
_PHONE_WORDS |= {"mob", "mobno", "tlf", "cel", "celular", "movil", "telefonnummer"}
_NUMBER_OF = {"contact", "mobile", "cell", "phone", "tel", "whatsapp", "fax"}  # contact_number
# Words that make an email or phone word an attribute of it, not the address or number
# (`phone_model`, `is_mobile`, `mobile_app_version`, `mail_template`, `email_campaign_id`).
_ATTRIBUTE_WORDS = {"model", "app", "version", "type", "brand", "make", "os", "device"}
_ATTRIBUTE_WORDS |= {"template", "campaign", "status", "provider", "carrier", "network"}
_ATTRIBUTE_WORDS |= {"verified", "domain", "format", "count", "is", "has", "test", "id"}
# Words that are a person's name on their own, in the languages of the usual spellings.
_NAME_WORDS = {"firstname", "lastname", "surname", "fullname", "givenname", "familyname"}
_NAME_WORDS |= {"fname", "lname", "forename", "vorname", "nachname", "prenom", "nombre"}
_NAME_WORDS |= {"apellido", "apellidos", "cognome", "nome", "sobrenome", "middlename"}
_NAME_WORDS |= {"fn", "ln", "имя", "фамилия", "отчество", "фио", "名前", "氏名", "姓名"}
_NAME_WORDS |= {"nom", "voornaam", "achternaam", "familienname", "nazwisko", "imie"}
_NAME_WORDS |= {"efternamn", "fornamn", "fornavn", "etternavn", "efternavn", "sukunimi"}
_NAME_WORDS |= {"etunimi", "ime", "prezime", "soyad", "soyadi", "isim"}
_NAME_WORDS |= {"contactperson"}
_PERSON_WORDS = {"first", "last", "full", "given", "family", "sur", "customer", "client"}
_PERSON_WORDS |= {"user", "buyer", "contact", "member", "billing", "shipping", "person"}
_PERSON_WORDS |= {"recipient", "cardholder", "holder", "owner", "payer", "sender", "middle"}
_PERSON_WORDS |= {"f", "l", "m", "nick", "maiden", "display", "real", "legal", "guest"}
_PERSON_WORDS |= {"passenger", "patient", "cust", "card", "ship", "bill", "to", "from"}
_PERSON_WORDS |= {"traveler", "traveller", "applicant", "student", "employee"}


def _email_if_one(text: str) -> str:
    return hash_email(text) if is_email(text.strip().lower()) else text


def _phone_if_one(text: str) -> str:
    return hash_phone(text) if number_like(text) else text


_KEEPING = (_email_if_one, _phone_if_one)  # hash a value of their kind, keep any other


def _hash_named(hasher: Callable[[str], str], raw: object) -> str:
    """A dimension named for personal data, hashed whatever it holds: its kind's way when
    it is one (an email, a phone number, a name), else its trimmed lowercase text (an
    `email_opt_in` of "yes"); an empty value stays empty, there is nothing to hide."""
    text = str(raw).strip()
    if not text:
        return text
    try:
        return hasher(text)
    except ValueError:
        return sha256_hex(text.lower())


@functools.lru_cache(maxsize=4096)  # dimension names repeat from event to event
def _hasher_of(name: str) -> Callable[[str], str] | None:
    return personal_hasher(dimension_key(name))


def personal_hasher(key: str) -> Callable[[str], str] | None:
    """How a dimension named `key` (as `dimension_key` spells it) is hashed, if it names
    personal data: any word for email or phone (customer_email, Mail, mobile_phone,
    cellphone, contact_number), or a name of a person (name, first_name, fname,
    name_first, client_name, vorname; not product_name)."""
    words = [w for w in key.split("_") if w and not w.isdigit()]
    if not words:
        return None
    # `phone_model`: an attribute of a phone, not its number (`device_phone` is one); its
    # value is hashed still if it is an email or a phone number, else kept.
    attribute = bool(_ATTRIBUTE_WORDS & set(words)) and words[-1] in _ATTRIBUTE_WORDS
    if _EMAIL_WORDS & set(words) or key.replace("_", "") == "email":
        return _email_if_one if attribute else hash_email
    if _PHONE_WORDS & set(words):
        return _phone_if_one if attribute else hash_phone
    if "number" in words and _NUMBER_OF & set(words):
        return _phone_if_one if attribute else hash_phone
    named = _NAME_WORDS & set(words) or "name" in words or words == ["contact", "person"]
    if named and set(words) - _NAME_WORDS - {"name"} <= _PERSON_WORDS:  # no product_name
        return hash_name
    return None


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_LETTERS_DIGITS = re.compile(r"(?<=[^\W\d_])(?=\d)")  # name1 -> name_1
_SEPARATORS = re.compile(r"[\W_]+")


def dimension_key(name: str) -> str:
    """A dimension name in the form `personal_hasher` reads: firstName, First-Name,
    "first name" and "Name:" become first_name and name; accents and fullwidth forms are
    folded and invisible characters dropped (prénom -> prenom), so the usual spellings of
    a name are caught."""
    bare = name.strip()
    if not bare.isascii():  # compatibility forms folded, accents and invisible marks dropped
        folded = unicodedata.normalize("NFKD", bare)
        bare = "".join(c for c in folded if unicodedata.category(c) not in ("Mn", "Me", "Cf"))
        bare = bare.replace("\u0131", "i")  # Turkish dotless i: no decomposition to fold
    spaced = _LETTERS_DIGITS.sub("_", _CAMEL.sub("_", bare)).lower()
    return _SEPARATORS.sub("_", spaced).strip("_")


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
        return aware_to_epoch(value, per_second=1000) / 1000  # type: ignore[operator]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch_seconds(value)
    raise ValueError("must be a timezone-aware datetime or epoch seconds")


class VNativeConversion(PlatformEvent):
    """One conversion to import, keyed by the click vNative recorded.

    `conversion_time` (a timezone-aware `datetime` or epoch seconds) is optional and is not
    sent; it may not lie in the future. `event_id` is optional and not sent either: the
    receipt's id and the idempotency key (else one derived from the content and the time).
    """

    platform: ClassVar[str] = "vnative"
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
    def _not_future(cls, value: float | None) -> float | None:
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
            hasher = _hasher_of(name)
            try:
                if not name.strip():
                    raise ValueError("a dimension name must not be empty")
                if holds_national_phone(name):
                    raise ValueError("a dimension name must not hold a phone number")
                if hasher is None and isinstance(raw, str):
                    # Named like anything, holding an email or phone number: hashed too.
                    by_value = hash_by_value(raw)
                    hashed[name] = no_national_phone(raw) if by_value is None else by_value
                elif hasher is None:
                    hashed[name] = raw
                elif hasher in _KEEPING:  # a number too: 447700900123 is a phone number
                    text = raw if isinstance(raw, str) else str(raw) if type(raw) is int else None
                    kept = raw if text is None else hasher(text)
                    hashed[name] = raw if kept == text else kept
                else:
                    hashed[name] = _hash_named(hasher, raw)
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
        return round(self.conversion_time * 1000)

    def given_event_id(self) -> str | None:
        return self.event_id

    def id_salt(self) -> bytes:
        # Without an id, the content names the event: its time too, which is not sent.
        return b"" if self.conversion_time is None else b"|%d" % self.happened_at_ms()


EVENT = VNativeConversion
