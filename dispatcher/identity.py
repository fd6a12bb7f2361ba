"""Normalise and SHA-256-hash personal identifiers before they leave the producer.

Every function accepts a raw value or one that is already a SHA-256 hex digest; a
digest is passed through (lowercased) so hashing twice is impossible.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator

from dispatcher.national import holds_national_phone, whole_national_phone
from dispatcher.reading import (
    DATE,
    HTML_REFERENCE,
    NOT_DIGIT,
    labelled_at,
    visible_readings,
)

_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
# local@domain: a local part of visible characters, a domain of letter/digit labels
# (internationalised ones too) and a top-level label of letters (or its punycode, xn--...).
_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-zA-Z0-9-]{1,59})$"
)
# The same for ASCII text, whose local part also refuses controls (the domain's letter and
# digit classes cannot match one): one match instead of a search and a match.
_ASCII_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]\x00-\x20\x7f]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-zA-Z0-9-]{1,59})$"
)
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}  # controls, bidi marks, spaces
_TRUNK = re.compile(r"\(\s*0\s*\)")  # the national trunk prefix written inside a number


def is_sha256(value: str) -> bool:
    """Whether `value` already is a SHA-256 hex digest (64 hex characters)."""
    return len(value) == 64 and _SHA256_HEX.match(value) is not None


def is_email(value: str) -> bool:
    """Whether `value` is an email address: no controls, bidi marks or spaces anywhere."""
    if value.isascii():
        return _ASCII_EMAIL.match(value) is not None
    if any(unicodedata.category(c) in _INVISIBLE for c in value):
        return False
    return _EMAIL.match(value) is not None


def sha256_hex(value: str) -> str:
    """The SHA-256 hex digest of a UTF-8 string."""
    return hashlib.sha256(value.encode()).hexdigest()


def hash_email(raw: str) -> str:
    """Trim, lowercase and hash an email address (LinkedIn and Pinterest rules).

    Raises:
        ValueError: `raw` is neither an email address nor a SHA-256 digest.
    """
    value = raw.strip().lower()
    if is_sha256(value):
        return value
    if not is_email(value):
        raise ValueError("is not an email address or a SHA-256 hex digest")
    return sha256_hex(value)


def phone_digits(raw: str) -> str:
    """A phone number as E.164 digits: no `+`, no separators, no international prefix or
    leading zeros, no trunk `(0)` (`+44 (0)20 7946 0958` -> `442079460958`)."""
    return NOT_DIGIT.sub("", _TRUNK.sub("", raw)).lstrip("0")


def hash_phone(raw: str) -> str:
    """Hash a phone number's E.164 digits (`phone_digits`).

    Raises:
        ValueError: fewer than 7 digits remain, so it cannot be a phone number.
    """
    value = raw.strip()
    if is_sha256(value):
        return value.lower()
    digits = phone_digits(value)
    if len(digits) < 7:
        raise ValueError("is not a phone number with country code or a SHA-256 hex digest")
    return sha256_hex(digits)


def hash_name(raw: str) -> str:
    """Trim, lowercase and hash a first or last name.

    Raises:
        ValueError: the name is empty.
    """
    value = raw.strip().lower()
    if is_sha256(value):
        return value
    if not value:
        raise ValueError("is empty")
    return sha256_hex(value)


# Personal data found by value in free-form fields (docs: "Personal data in free text").
# An address is looked for at each "@" (`str.find`): a character of a local part before
# it, a domain after it (labels of at most 63, so a long text is searched in linear time).
# A line break around the "@" hides nothing (`jane.doe\n@example.com`); spaces do
# (`Available @ Amazon.com` is no address).
_LOCAL_CHAR = re.compile(r"[^\s@<>\"'(),;:/?&=#%]")
_DOMAIN_AFTER = re.compile(
    r"[\r\n]{0,2}(?P<domain>[^\W_][\w-]{0,62}(?:\.[\w-]{1,63}){0,8}\.(?P<tld>[^\W\d_]{2,63}))"
    r"(?![0-9A-Za-z])"  # `clip@hd.mp4`, `a@2x.min.woff2`: no top-level domain has a digit
)
# `product@2x.jpg` (an image for high-density screens), `logo@3x.png`: file names, told
# by their extension, or by a density label and one more (`icons@2x.woff2`; but
# `jane@2x.example.org` is an address).
_FILE_TLDS = {"jpg", "jpeg", "png", "gif", "webp", "svg", "avif", "bmp", "ico", "tif", "tiff"}
_FILE_TLDS |= {"pdf", "css", "js", "json", "html", "htm", "txt", "xml", "heic", "csv"}
_FILE_TLDS |= {"doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "rtf", "eps", "psd"}
_FILE_TLDS |= {"zip", "gz", "tgz", "br", "zst", "rar", "woff", "ttf", "otf", "eot", "map"}
_FILE_TLDS |= {"webm", "mov", "avi", "mkv", "wav", "ogg", "flac", "glb", "gltf", "usdz"}
# A density label (`@2x.`), then one label (`icons@2x.woff2`) or more ending in a file's
# extension (`bg@2x.webp.br`, `sprite@2x.3f2a1b.woff2`, `hero@2x.min.webm`).
_DENSITY = re.compile(r"[0-9]+(?:\.[0-9]+)?x\.", re.IGNORECASE)
# An international number: "+", a country code (never starting with 0: `+0100` is a time
# zone), then 7 to 15 digits in all with the usual separators between (spaces, tabs,
# brackets, dots, slashes, hyphens and dashes).
_SEPARATOR = r"[ \t().\-/\u00b7\u2010-\u2015\u2212]"
_PHONE = re.compile(r"\+ ?\(?[1-9](?:[0-9]|" + _SEPARATOR + r"){5,24}[0-9]")
# A word before the "+" makes it a word's "+" (`spring+sale+20240315` in a URL query, where
# "+" is a space; `2.4.0-beta+20240115`), unless the word labels a phone (`Tel+44 ...`);
# letters or digits right after it make it a fragment (`a+1234567b` in base64).
_PHONE_AT = re.compile(_PHONE.pattern + r"(?![0-9A-Za-z])")


_THOUSANDS = re.compile(r"\+ ?[0-9]{1,3}(?:[ ,][0-9]{3})+")
# `+51.5074 -0.1278`, `+40.7128-074.0060/`: signed coordinates, not a number: exactly two
# decimals with a separator or a sign between them (`+44.7700.900461` is a number).
_COORDINATES = re.compile(
    r"\+[0-9]{1,3}\.[0-9]{3,}(?:[ ,/]+[+\-]?|[+\-])[0-9]{1,3}\.[0-9]{3,}(?!\.?[0-9])"
)


_DECIMAL = re.compile(r"\+[0-9]{1,3}\.[0-9]{3,}")


def _phone_like(match: re.Match[str]) -> bool:
    number = match.group()
    digits = len(NOT_DIGIT.sub("", number))
    # Without a separator, or with a space after the "+", fewer than 9 digits are a signed
    # count (`offset=+1000000`, `Bonus + 1 000 000`), and so are thousands below 10 digits.
    least = 9 if number[1:].isdigit() or number.startswith("+ ") else 7
    if _THOUSANDS.fullmatch(number):
        least = 10
    return (
        least <= digits <= 15
        and not DATE.search(number)
        and not _COORDINATES.match(match.string, match.start())
        and not _DECIMAL.fullmatch(number)  # `-34.4708 +106.4749`: a signed decimal
    )


def _plain(text: str) -> bool:
    """`text` can hold no email or phone number: no "@", "+", escape or HTML character
    reference, all ASCII."""
    return (
        text.isascii()
        and "@" not in text
        and "+" not in text
        and "%" not in text
        and ("&" not in text or HTML_REFERENCE.search(text) is None)
    )


def personal_kind(text: str) -> str | None:
    """ "email" if `text` holds an email address anywhere, "phone" if it holds an
    international phone number anywhere (a "+" and 7 to 15 digits: `Tel: +44 20 7946
    0958`), in any of its `visible_readings`; else None. Plain digit strings are not taken
    for phones: they are ids, order numbers, amounts."""
    if _plain(text):
        return None  # most strings
    readings = visible_readings(text)
    if any("@" in v and any(not _file_name(m) for m in _addresses(v)) for v in readings):
        return "email"
    if any("+" in v and _holds_phone(v) for v in readings):
        return "phone"
    return None


def _addresses(text: str) -> Iterator[re.Match[str]]:
    """The domain of each address in `text`: at an "@" with a local part's character
    before it (a line break or two between aside) and a domain after it."""
    at = text.find("@")
    while at != -1:
        start = max(0, at - 2)
        local_end = start + len(text[start:at].rstrip("\r\n"))
        if local_end and _LOCAL_CHAR.match(text, local_end - 1):
            domain = _DOMAIN_AFTER.match(text, at + 1)
            if domain is not None:
                yield domain
        at = text.find("@", at + 1)


def _file_name(match: re.Match[str]) -> bool:
    if match["tld"].lower() in _FILE_TLDS:
        return True
    density = _DENSITY.match(match["domain"])
    return density is not None and "." not in match["domain"][density.end() :]


def personal_label(kind: str) -> str:
    """How an error names what `personal_kind` found: "email address" or "phone number"."""
    return "email address" if kind == "email" else "phone number"


def any_personal_kind(text: str) -> str | None:
    """`personal_kind`, or "phone" for a national number (`holds_national_phone`)."""
    return personal_kind(text) or ("phone" if holds_national_phone(text) else None)


def masked(name: str) -> str:
    """`name` (a key the caller made up) as an error may show it: one that holds an email
    address or a phone number is `<email address>` or `<phone number>`, so an application
    that logs the error does not log the personal data."""
    kind = any_personal_kind(name)
    if kind is None and number_like(name):  # as a name, `(555) 123-4567` is masked too
        kind = "phone"
    return name if kind is None else f"<{personal_label(kind)}>"


def number_like(text: str) -> bool:
    """Whether `text` is only a number of 7 to 15 digits (separators and a "+" aside) and
    no date (`2024-01-15` is a day): what a name or a value named for a phone holds when
    it holds one."""
    digits = sum(c.isdigit() for c in text)
    return 7 <= digits <= 15 and _NUMBER_ONLY.fullmatch(text) is not None and not DATE.search(text)


_NUMBER_ONLY = re.compile(r"[\d\s().+\-/]+")


def _holds_phone(text: str) -> bool:
    """An international number at one of the "+" signs of `text` (found with `str.find`:
    a pattern starting with a look-behind would be tried at every position)."""
    at = text.find("+")
    while at != -1:
        before = text[at - 1] if at else " "
        free = not (before.isascii() and before.isalnum())
        if free or labelled_at(text, at):
            match = _PHONE_AT.match(text, at)
            if match is not None and _phone_like(match):
                return True
        at = text.find("+", at + 1)
    return False


def whole_phone(text: str) -> bool:
    """Whether all of `text` (in one of its `visible_readings`) is one international phone
    number."""
    return any(_whole_phone(value.strip()) for value in visible_readings(text))


def _whole_phone(value: str) -> bool:
    match = _PHONE.fullmatch(value)
    return match is not None and _phone_like(match)


def hash_by_value(text: str) -> str | None:
    """The platform hash of `text` if all of it is an email or a phone number (national
    ones included), else None."""
    if _plain(text):
        return hash_phone(text) if whole_national_phone(text) else None
    for value in visible_readings(text):
        value = value.strip()
        if is_email(value.lower()) and not all(_file_name(m) for m in _addresses(value)):
            return hash_email(value)
        if _whole_phone(value) or whole_national_phone(value):
            return hash_phone(value)
    return None
