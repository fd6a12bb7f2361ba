"""Identity normalisation and hashing."""

from __future__ import annotations

import hashlib

import pytest

from dispatcher.identity import hash_email, hash_name, hash_phone, is_sha256


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_email_is_trimmed_lowercased_then_hashed() -> None:
    # Given an email with surrounding spaces and capitals
    # When it is hashed
    # Then it equals the SHA-256 of the normalised address
    assert hash_email("  Mike.Smith@Example.COM ") == sha("mike.smith@example.com")


def test_an_already_hashed_email_is_not_hashed_again() -> None:
    digest = sha("a@b.co")
    assert hash_email(digest.upper()) == digest
    assert is_sha256(digest)


def test_something_that_is_not_an_email_is_refused() -> None:
    with pytest.raises(ValueError, match="not an email"):
        hash_email("mike at example")


def test_phone_keeps_digits_with_country_code() -> None:
    assert hash_phone("+1 (650) 555-1234") == sha("16505551234")
    with pytest.raises(ValueError, match="phone"):
        hash_phone("12-34")


def test_name_is_lowercased_and_hashed() -> None:
    assert hash_name(" Mike ") == sha("mike")
    with pytest.raises(ValueError, match="empty"):
        hash_name("  ")


@pytest.mark.parametrize(
    "raw", ["+44 (0)20 7946 0958", "0044 (0)20 7946 0958", "+44 20 7946 0958", "00442079460958"]
)
def test_phone_is_reduced_to_e164_digits(raw: str) -> None:
    # The international prefix 00, leading zeros and the trunk "(0)" are not E.164 digits
    assert hash_phone(raw) == sha("442079460958")


def test_an_email_under_a_punycode_top_level_domain_is_an_email() -> None:
    assert hash_email("Jane@Example.xn--p1ai") == sha("jane@example.xn--p1ai")
