"""Identity normalisation and hashing."""

from __future__ import annotations

import hashlib
import json

import pytest

from dispatcher import InvalidEventError, identity, national
from dispatcher.events import VNativeConversion
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


NATIONAL = [
    "(555) 123-4567", "(591)341-7776", "555.123.4567", "797-386-9073x6625", "1-555-123-4567",
    "206.269.0743 ext. 12", "(0161) 496 0066", "(01632) 960391", "020 7946 0958",
    "04 15 39 15 00", "03662 585178", "030/1234567", "8 (066) 907-43-91", "8 812 415 86 83",
    "06.12.34.56.78", "916 123-45-67", "138 0013 8000", "555 123 4567", "164.870.5964",
    "612 345 678", "22 657 07 04", "98765 43210", "11 91234-5678", "75-6508-8995",
    "(0406)-812415", "(02).4397.2981",
    "\uff10\uff12\uff10 7946 0958",  # fullwidth digits
    "090\u30fb1234\u30fb5678",  # katakana middle dots
]  # fmt: skip
NOT_PHONES = [
    "1796306880035", "sku 40063813", "2024-01-15 10:30:00", "05.12.2024 10:30",
    "192.168.100.200", "1.234.567.890", "12345.6789", "size 10 12 14 16 18", "10 000 000",
    "ORD-2024-000123", "batch 2024-000123-45", "550e8400-e29b-41d4-a716-446655440000",
    "ISBN 978-3-16-148410-0", "4111 1111 1111 1111", "a123-456-7890", "123-456-7890b",
    "https://shop.example/p/1234567-89", "v1.0.0-123-456-7890", "0 12 34 56",
    "SKU 012-345-6789", "Article 012 345 678", "Order #555-123-4567", "Invoice 03/2024 0042",
    "Gift card 0000 0000 0000", "Tracking 1Z 999 AA1 01 2345 6784",
    "ISO 200 400 3200", "Sizes 500 600 700", "100-200-3000",
    "range 10 1000 2000", "dims 20 1200 1800", "totals 12 1500 2500", "pack 98765-43210",
    "WAYBILL 55 1234 5678", "342 3026509", "Budget 250 500-1000", "Scan 358 231 6269.pdf",
    "$597 833 937", "C$879 450 148", "CHF 521 197 774", "765 907 182 \u20bd", "310 450 000 EUR",
    "9400 9526 0451 5437 1489 54", "IBAN DE89 3704 0044 0532 0130 00",  # > 15 digits in all
]  # fmt: skip


@pytest.mark.parametrize("number", NATIONAL)
def test_a_national_number_written_as_people_write_one_is_found(number: str) -> None:
    assert national.whole_national_phone(number)
    assert national.holds_national_phone(f"call {number} after five")


@pytest.mark.parametrize("text", NOT_PHONES)
def test_ids_dates_amounts_and_addresses_are_not_national_numbers(text: str) -> None:
    assert not national.holds_national_phone(text)
    assert not national.whole_national_phone(text)


@pytest.mark.parametrize(
    "text", ["phone no. 555-123-4567", "Tel. Nr. 030 1234567", "Phone: 5551234567"]
)
def test_a_word_for_a_phone_outweighs_a_word_for_an_id(text: str) -> None:
    assert national.holds_national_phone(text)


def test_a_whole_national_number_is_hashed_by_value_as_its_digits() -> None:
    assert identity.hash_by_value("(555) 123-4567") == identity.sha256_hex("5551234567")
    assert identity.hash_by_value("order 555-123-4567") is None  # not all of it: refused


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("https://x.example/r?next=%2Fok%3Fe%3Djane.doe%2540example.com", "email"),  # twice
        ("jane.doe@example\u3002com", "email"),  # an ideographic full stop is a dot
        ("jane.doe\n@example.com", "email"),
        ("jane.doe@\u2800example.com", "email"),  # a Braille blank
        ("+(44) 20 7946 0958", "phone"),
        ("+ 44 20 7946 0958", "phone"),
        ("+44\u00b720\u00b77946\u00b70958", "phone"),  # middle dots
        ("+81 90\u30fb1234\u30fb5678", "phone"),  # katakana middle dots
        ("+81 90\uff651234\uff655678", "phone"),  # halfwidth
        ("+44\u20277700\u2027900461", "phone"),  # hyphenation points
        ("+44 7700\u2022900\u2022461", "phone"),  # bullets
        ("+44.7700.900461", "phone"),  # dots between groups: no coordinates
        ("+852.9123.4567", "phone"),
        ("+49.1512.3456789", "phone"),
        ("tamsin@2x.larchfield.org", "email"),  # `2x.` before an address's domain
        ("tamsin.roe&#64;larchfield.org", "email"),  # HTML character references
        ("tamsin&#x40;larchfield.org", "email"),
        ("tamsin&commat;larchfield.org", "email"),
        ("&#43;44 7700 900461", "phone"),
        ("tamsin.roe%25252540larchfield.org", "email"),  # escaped four times
    ],
)
def test_disguised_emails_and_international_numbers_are_found(text: str, kind: str) -> None:
    assert identity.personal_kind(text) == kind


@pytest.mark.parametrize(
    "text",
    [
        "https://cdn.shop.example/img/product@2x.jpg", "logo@3x.png", "+51.5074 -0.1278",
        "+40.7128-074.0060/", "?offset=+1000000", "score=+1234567", "?sig=%2B1234567%2Fabc",
        "+51.5074,-0.1278", "+48.8566 +2.3522", "?a=1&copy=2&utm=x", "AT&amp;T",
        "At +40.7128 -74.0060.", "icons@2x.woff2", "hero@2x.mp4", "sprite@1.5x.ttf",
        "https://x.example/?q=a&num=20&period=monthly&plus=1", "bg@2x.webp.br",
        "sprite@2x.3f2a1b.woff2", "video@1080p.mp4", "Spec@Rev3.docx", "archive@v2.zip",
        "-34.4708 +106.4749", "https://maps.example/?q=+12.61627,+38.35292",
        "(+31.6722, +117.6330)",
    ],
)  # fmt: skip
def test_file_names_coordinates_and_signed_counts_are_not_personal(text: str) -> None:
    assert identity.personal_kind(text) is None
    assert not national.holds_national_phone(text)


@pytest.mark.parametrize(
    "text",
    [
        "(555) 123-\u200b4567",  # a zero-width space inside
        "\u0665\u0665\u0665-\u0661\u0662\u0663-\u0664\u0665\u0666\u0667",  # Arabic-Indic digits
        "Call 555\u2013123\u20134567",  # en dashes
        "https://shop.example/?phone=555+123+4567",  # "+" is a space in a query
    ],
)
def test_disguised_national_numbers_are_found(text: str) -> None:
    assert national.holds_national_phone(text)


@pytest.mark.parametrize(
    "text",
    [
        "Available in 250 500 1000 ml", "Sizes 100-200-1000", "ISO 100 200 3200",
        "Delivered 05 01 2024 10:30", "Chapter 1 (1999) 2000 2001",
        "https://shop.example/?q=red+shoes+size+10",
    ],
)  # fmt: skip
def test_quantities_dates_and_years_are_not_national_numbers(text: str) -> None:
    assert not national.holds_national_phone(text)


@pytest.mark.parametrize(
    "text",
    [
        "https://shop.example/phone-cases/123456789", "Cell phone holder 1234567890",
        "Phone case SKU 012-345-6789", "Contact lenses Ref 012 345 678",
        "Order number: 012-345-6789", "https://shop.example/?order_id=0123-456-789",
        "LEGO Icons (2023) 10294 Titanic", "Concert 20 06 2024 19 30",
        "Available @ Amazon.com", "Bonus + 1 000 000 points", "+1 234 567 points",
    ],
)  # fmt: skip
def test_product_names_urls_and_counts_near_phone_words_are_not_phones(text: str) -> None:
    assert identity.personal_kind(text) is None
    assert not national.holds_national_phone(text)


def test_the_search_of_a_serialised_event_reads_text_around_a_cut_character() -> None:
    # 30 bytes before the number end inside a two-byte "é": the window must still decode
    body = json.dumps({"t": "é" * 20 + "a 555-123-4567"}, ensure_ascii=False).encode()
    assert national.national_phone_in_json(body)
    uuid = json.dumps({"id": "é" * 20 + "550e8400-e29b-41d4-a716-446655440000"}).encode()
    assert not national.national_phone_in_json(uuid)


FOUND_IN_ANY_FIELD = [
    *NATIONAL, "Phone:5551234567", "tel:07700900123", "phone=5551234567", "Phone5551234567",
    "phone no-5551234567", "Tel nr.5551234567", "teléfono:5551234567",
    "\uff34\uff45\uff4c\uff1a\uff15\uff15\uff15\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
    "tel\u200b5551234567", "https://x.example/?phone=555+123+4567",
    "https://x.example/?p=555%20123%204567", "https://x.example/?q=Phone%205551234567",
    "\u0665\u0665\u0665-\u0661\u0662\u0663-\u0664\u0665\u0666\u0667", "x 555-123-4567 y",
    "\u0442\u0435\u043b\u0435\u0444\u043e\u043d 5551234567", "Phone: 020 7930 4830",
    "Dave 555-123-4567 before 6pm", "Ask for Bea (555) 123-4567 ext. 12", "Phone:5551234567.",
    "tel:5551234567 (mobile)", ":555-123-4567)fade", "Tel:+(0161) 496 0066",
    "callto:5551234567", "viber://chat?number=447700900461", "skype:447700900461?call",
    "Tel: 347 1234567", "Tel.: 55 1234 5678",  # an Italian mobile, Mexico: after a label
    "Flat 2 020 7946 0958",  # a house number before it
    # local numbers of 7 or 8 digits, and 3-3-4 from any digit, right after a label
    "Tel: 555-1234", "Phone: 4656 3414", "тел. 706 69 07", "Tel. 08-60 42 30",
    "Fax: (02) 4656 3414", "Tel: 187 928 2406", "Tel: 555-1234.", "WhatsApp: 465-63-41",
    "Tel.: 4656 3414", "Tel : 555-1234", "Telefon: 0800 1234",
    # a two-word label, a year last after 3 digits
    "Tel.-Nr. 555-1234", "Tel./Fax: 555-1234",
    "Tel/Fax: 4656 3414", "Tel.-Nr.5551234567", "Tel: 555-2012", "Tel: 187 928 2012",
    # a form-encoded query: a "+" is a space, in a parameter named for a phone
    "?tel=612+345+678", "phone=612+345+678", "https://s.example/?mobile=98765+43210",
    "https://s.example/?billing_phone=555+123+4567", "https://s.example/tel/555-123-4567",
    # links that open a chat or a message to a number: its digits are the number
    "https://wa.me/15551234567", "https://wa.me/447700900123?text=Hi", "sms:5551234567",
    "SMS://07700900123",
]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["706 69 07", "465-63-41", "4656 3414", "hotel 555-1234", "Order 555-1234", "SKU 4656 3414",
     "mobile 2024-01-15", "cell 2023 2024", "Phone 12-34-56", "tel 555-1234-99",
     "mobile 1000 2000", "Tel: 555-12345", "187 928 2406", "call of duty 2",
     # what only looks like one: a label without a colon, dates, screens, hours, prices
     "phone 4656 3414", "mobile-20240315", "?utm_campaign=mobile-20240315&utm_source=fb",
     "mobile-2024-1115", "Handy 1080 2400", "Mobile 1080 1920 px", "Call 0900-1730 Mon-Fri",
     "Tel: 0900-1730", "Phone 12 34 56", "Handy 1299 1499", "Brother FAX-2840 2600",
     "Mobile 1234567", "Tel: 2024 0315", "Tel: 1080 1920 px", "mobile 24 03 15",
     "Tel: 1080p 1920", "Phone: 830-1730 Mon-Fri", "Tel: 845-1715", "Phone: 750 1334 pixels",
     "Phone: 199-1299 $", "Телефон: 999-4999 \u0440\u0443\u0431", "Tel: 0315 2024",
     "Tel:2024-0315", "hotel:555-1234", "Ref:555-1234", "Tel:555-1234-99", "a.555-1234"],
)  # fmt: skip
def test_short_numbers_are_phones_only_right_after_a_word_for_one(text: str) -> None:
    assert not national.holds_national_phone(text)
    assert not national.national_phone_in_json(json_body(text))


@pytest.mark.parametrize("text", ["Tel:555-1234", "Tel.:555-1234", "Fax:4656 3414"])
def test_a_short_number_glued_to_its_labels_colon_is_found_in_free_text(text: str) -> None:
    # Only the string search reads runs of 8 characters (documented): free-text fields
    # ask it as they are validated, so such a number is refused there.
    assert national.holds_national_phone(text)
    with pytest.raises(InvalidEventError) as caught:
        VNativeConversion.model_validate({"click_id": "c", "sub1": f"Office {text}"})
    assert [e.field for e in caught.value.errors] == ["sub1"]


def json_body(text: str) -> bytes:
    event = {"event_time": 1796409296, "ip": "203.0.113.195", "id": text, "ClientId":
             "1733300000.123456789", "em": identity.sha256_hex("a@b.example"),
             "url": "https://shop.example/thanks?q=red+shoes"}  # fmt: skip
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("text", FOUND_IN_ANY_FIELD)
def test_the_search_of_a_serialised_event_finds_what_a_string_search_finds(text: str) -> None:
    assert national.holds_national_phone(text)
    assert national.national_phone_in_json(json_body(text))


@pytest.mark.parametrize(
    "text",
    [
        *NOT_PHONES, "550e8400-e29b-41d4-a716-446655440000", "2001:db8::8a2e:370:7334",
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.6099.144 Safari/537.36",
        "192.168.100.200", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "PO 123-456-7890",
        "Bestellnr. 555-123-4567", "\u0417\u0430\u043a\u0430\u0437 555-123-4567",
        "Commande n\u00b0 555-123-4567", "PH 0123456789", "FON 123456789",
        # ids in a path or after a code, lists of numbers in a query (a "+" a space)
        "https://s.example/ticket/012-3456-7890", "INV/0042-123-4567", "ACME.0123-456-789",
        "https://s.example/?zips=90210+90211", "https://s.example/?ids=701+702+703",
        "https://s.example/?filter=size:512+price:599+999+1299",
        "https://shop.example/wa.mex/15551234567", "https://x.example/cms:5551234567",
    ],
)  # fmt: skip
def test_ids_addresses_and_versions_in_a_serialised_event_are_no_phones(text: str) -> None:
    assert not national.holds_national_phone(text)
    assert not national.national_phone_in_json(json_body(text))


@pytest.mark.parametrize(
    "number", ["020 7930 4830", "98760 43210", "800-550-0100", "tel 1-800-300-3000"]
)
def test_numbers_with_round_groups_are_phones_unless_all_are_hundreds(number: str) -> None:
    assert national.holds_national_phone(number)


def test_a_word_ending_in_a_phone_word_is_no_label() -> None:
    assert identity.personal_kind("recall+1 234 567 890") is None
    assert identity.personal_kind("call+1 234 567 890") == "phone"
