"""Normalise and SHA-256-hash personal identifiers before they leave the producer.

Every function accepts a raw value or one that is already a SHA-256 hex digest; a
digest is passed through (lowercased) so hashing twice is impossible.
"""

from __future__ import annotations

import hashlib
import re

_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NOT_DIGIT = re.compile(r"\D")


def is_sha256(value: str) -> bool:
    """Whether `value` already is a SHA-256 hex digest (64 hex characters)."""
    return len(value) == 64 and _SHA256_HEX.match(value) is not None


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
    if not _EMAIL.match(value):
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
