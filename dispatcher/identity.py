"""Normalise and SHA-256-hash personal identifiers before they leave the producer.

Every function accepts a raw value or one that is already a SHA-256 hex digest; a
digest is passed through (lowercased) so hashing twice is impossible.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
# local@domain: a local part of visible characters, a domain of letter/digit labels
# (internationalised ones too) and a top-level label of letters.
_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}$"
)
# The same for ASCII text, whose local part also refuses controls (the domain's letter and
# digit classes cannot match one): one match instead of a search and a match.
_ASCII_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]\x00-\x20\x7f]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}$"
)
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}  # controls, bidi marks, spaces
_NOT_DIGIT = re.compile(r"[^0-9]")


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


def hash_phone(raw: str) -> str:
    """Keep the digits (country code included, no leading +) and hash them.

    Raises:
        ValueError: fewer than 7 digits remain, so it cannot be a phone number.
    """
    value = raw.strip()
    if is_sha256(value):
        return value.lower()
    digits = _NOT_DIGIT.sub("", value)
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
_EMAIL_INSIDE = re.compile(
    r"[^\s@<>\"'(),;:/?&=#%]+(?:@|%40)[^\W_][\w-]*(?:\.[\w-]+)*\.[^\W\d_]{2,}"
)
_PHONE = re.compile(r"^\+[0-9][0-9 ().-]{5,20}[0-9]$")


def personal_kind(text: str) -> str | None:
    """ "email" if `text` holds an email address anywhere (URL-encoded too), "phone" if it
    is an international phone number (a leading "+"), else None. Plain digit strings are
    not taken for phones: they are ids, order numbers, amounts."""
    if ("@" in text or "%40" in text) and _EMAIL_INSIDE.search(text):
        return "email"
    value = text.strip()
    if value.startswith("+") and _PHONE.match(value) and len(_NOT_DIGIT.sub("", value)) >= 7:
        return "phone"
    return None


def hash_by_value(text: str) -> str | None:
    """The platform hash of `text` if all of it is an email or a phone number, else None."""
    value = text.strip()
    if is_email(value.lower()):
        return hash_email(value)
    if personal_kind(value) == "phone":
        return hash_phone(value)
    return None
