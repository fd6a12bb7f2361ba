"""Normalise and SHA-256-hash personal identifiers before they leave the producer.

Every function accepts a raw value or one that is already a SHA-256 hex digest; a
digest is passed through (lowercased) so hashing twice is impossible.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import unquote

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
_NOT_DIGIT = re.compile(r"[^0-9]")
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
    return _NOT_DIGIT.sub("", _TRUNK.sub("", raw)).lstrip("0")


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
# Parts bounded (a local part of 64, labels of 63): a long text is searched in linear time.
# A line break around the "@" hides nothing (`jane.doe\n@example.com`); spaces do
# (`Available @ Amazon.com` is no address).
_EMAIL_INSIDE = re.compile(
    r"[^\s@<>\"'(),;:/?&=#%]{1,64}[\r\n]{0,2}@[\r\n]{0,2}"
    r"(?P<domain>[^\W_][\w-]{0,62}(?:\.[\w-]{1,63}){0,8}\.(?P<tld>[^\W\d_]{2,63}))"
)
# `product@2x.jpg` (an image for high-density screens), `logo@3x.png`: file names.
_FILE_TLDS = {"jpg", "jpeg", "png", "gif", "webp", "svg", "avif", "bmp", "ico", "tif", "tiff"}
_FILE_TLDS |= {"pdf", "css", "js", "json", "html", "htm", "txt", "xml", "heic"}
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
# Words that label a phone, glued to its "+" (Tel+44, Telefon+49, Ph+44, Tlf+47, Tél+33)
# or before a national number (`phone no. 555-123-4567`, `Handy 0171 1234567`).
_PHONE_LABELS: tuple[str, ...] = ("telephone", "telefon", "teléfono", "телефон", "tel", "tél")
_PHONE_LABELS += ("phone", "ph", "tlf", "fon", "mobile", "mobil", "mob", "móvil", "movil")
_PHONE_LABELS += ("cell", "call", "fax", "whatsapp", "handy", "тел")
_DAY, _MONTH, _YEAR = r"(?:0?[1-9]|[12][0-9]|3[01])", r"(?:0?[1-9]|1[0-2])", r"(?:19|20)[0-9]{2}"
# A date inside a "+" run makes it no phone (`Bundle +2 2024/01/15`, `+1 12/31/2024`).
_DATE = re.compile(
    rf"{_YEAR}[-/.]{_MONTH}[-/.]{_DAY}(?![0-9])|(?<![0-9]){_DAY}[-/.]{_DAY}[-/.]{_YEAR}"
)
_HIDDEN = {"Cf", "Mn", "Me"}  # format characters, and marks left after composing
# Characters that print as nothing although no format category says so: the Braille
# blank and the Hangul fillers.
_BLANKS = {"\u2800", "\u115f", "\u1160", "\u3164", "\uffa0"}


def visible_text(text: str) -> str:
    """`text` as a reader sees it where an email or a phone number could hide: percent-
    escapes decoded (`%2B44%2020...` in a URL), then compatibility forms folded (fullwidth
    plus, digits, at sign), and where a "+" or "@" is left, digits of any script read as
    ASCII digits and invisible characters (zero-width, bidi marks, byte order marks,
    joiners, variation selectors) dropped."""
    for _ in range(3):  # `%2540`: an escape escaped again, as nested redirect URLs do
        if "%" not in text or (decoded := unquote(text)) == text:
            break
        text = decoded
    if text.isascii():
        return text
    folded = unicodedata.normalize("NFKC", text)
    if "+" not in folded and "@" not in folded:  # no phone or email to find: as it is
        return folded
    return "".join(_visible_char(c) for c in folded if _shown(c))


def _shown(c: str) -> bool:
    return c not in _BLANKS and unicodedata.category(c) not in _HIDDEN


def _visible_char(c: str) -> str:
    if c.isascii():
        return c
    if c in _DOTS:
        return "."
    if c in _DASHES:
        return "-"
    digit = unicodedata.decimal(c, None)
    return c if digit is None else str(digit)


_DOTS = {"\u3002", "\uff61"}  # ideographic full stops: a dot in a domain (IDNA)
_DASHES = {chr(c) for c in range(0x2010, 0x2016)} | {"\u2212"}


def readable_text(text: str) -> str:
    """`visible_text`, and for every non-ASCII text (not only where a "+" or "@" is) digits
    of any script as ASCII digits, dashes as "-", invisible characters dropped: what the
    search for national numbers reads."""
    text = visible_text(text)
    if text.isascii():
        return text
    return "".join(_visible_char(c) for c in text if _shown(c))


_THOUSANDS = re.compile(r"\+ ?[0-9]{1,3}(?:[ ,][0-9]{3})+")
# `+51.5074 -0.1278`, `+40.7128-074.0060/`: signed coordinates, not a number.
_COORDINATES = re.compile(r"\+[0-9]{1,3}\.[0-9]{3,}[ ,/]*[+\-]?[0-9]{1,3}\.[0-9]{3,}")


def _phone_like(match: re.Match[str]) -> bool:
    number = match.group()
    digits = len(_NOT_DIGIT.sub("", number))
    # Without a separator, or with a space after the "+", fewer than 9 digits are a signed
    # count (`offset=+1000000`, `Bonus + 1 000 000`), and so are thousands below 10 digits.
    least = 9 if number[1:].isdigit() or number.startswith("+ ") else 7
    if _THOUSANDS.fullmatch(number):
        least = 10
    return (
        least <= digits <= 15
        and not _DATE.search(number)
        and not _COORDINATES.match(match.string, match.start())
    )


def _plain(text: str) -> bool:
    """`text` can hold no email or phone number: no "@", "+" or escape, all ASCII."""
    return text.isascii() and "@" not in text and "+" not in text and "%" not in text


def personal_kind(text: str) -> str | None:
    """ "email" if `text` holds an email address anywhere, "phone" if it holds an
    international phone number anywhere (a "+" and 7 to 15 digits: `Tel: +44 20 7946
    0958`), read as `visible_text`; else None. Plain digit strings are not taken for
    phones: they are ids, order numbers, amounts."""
    if _plain(text):
        return None  # most strings
    value = visible_text(text)
    if "@" in value and any(not _file_name(m) for m in _EMAIL_INSIDE.finditer(value)):
        return "email"
    if "+" in value and _holds_phone(value):
        return "phone"
    return None


def _file_name(match: re.Match[str]) -> bool:
    return match["tld"].lower() in _FILE_TLDS or _DENSITY.match(match["domain"]) is not None


def personal_label(kind: str) -> str:
    """How an error names what `personal_kind` found: "email address" or "phone number"."""
    return "email address" if kind == "email" else "phone number"


def masked(name: str) -> str:
    """`name` (a key the caller made up) as an error may show it: one that holds an email
    address or a phone number is `<email address>` or `<phone number>`, so an application
    that logs the error does not log the personal data."""
    kind = personal_kind(name) or ("phone" if holds_national_phone(name) else None)
    if kind is None and number_like(name):  # as a name, `(555) 123-4567` is masked too
        kind = "phone"
    return name if kind is None else f"<{personal_label(kind)}>"


def number_like(text: str) -> bool:
    """Whether `text` is only a number of 7 to 15 digits (separators and a "+" aside) and
    no date (`2024-01-15` is a day): what a name or a value named for a phone holds when
    it holds one."""
    digits = sum(c.isdigit() for c in text)
    return 7 <= digits <= 15 and _NUMBER_ONLY.fullmatch(text) is not None and not _DATE.search(text)


_NUMBER_ONLY = re.compile(r"[\d\s().+\-/]+")


def _holds_phone(text: str) -> bool:
    """An international number at one of the "+" signs of `text` (found with `str.find`:
    a pattern starting with a look-behind would be tried at every position)."""
    at = text.find("+")
    while at != -1:
        before = text[at - 1] if at else " "
        free = not (before.isascii() and before.isalnum())
        if free or text[max(0, at - 8) : at].lower().endswith(_PHONE_LABELS):
            match = _PHONE_AT.match(text, at)
            if match is not None and _phone_like(match):
                return True
        at = text.find("+", at + 1)
    return False


# A national number, written without "+" the way people write one: `(555) 123-4567`,
# `555.123.4567`, `1-555-123-4567`, `(0161) 496 0066`, `020 7946 0958`, `04 15 39 15 00`,
# `8 (066) 907-43-91`, with an extension after it (`x123`, `ext. 12`). Only these shapes:
# a plain digit string is an id, an order number or an amount, never a phone.
_EXTENSION = r"(?:[ ]?(?:x|ext\.?)[ ]?[0-9]{1,6})?"
_NATIONAL = re.compile(
    r"(?<![0-9A-Za-z.,/\-])(?P<number>"
    r"(?:1[ .\-])?[0-9]{3}(?P<sep>[.\-])[0-9]{3}(?P=sep)[0-9]{4}"  # North American
    r"|(?:1 )?[2-9][0-9]{2} [0-9]{3} [0-9]{4}"  # North American with spaces: 555 123 4567
    r"|(?:[0-9]{1,3}[ ]?)?\(0?[0-9]{1,4}\)[ .\-]?[0-9]{2,4}(?:[ .\-]?[0-9]{2,4}){1,3}"  # (area)
    r"|0[0-9]{1,4}(?:[ .\-/][0-9]{2,8}){1,4}"  # a trunk 0, groups after it
    r"|8[ \-]?\(?[0-9]{3}\)?[ \-]?[0-9]{3}[ \-]?[0-9]{2}[ \-]?[0-9]{2}"  # Russian 8
    r"|[0-9]{3}[ \-][0-9]{3}-[0-9]{2}-[0-9]{2}"  # Russian, without the 8: 916 123-45-67
    r"|1[3-9][0-9](?P<cn>[ \-])[0-9]{4}(?P=cn)[0-9]{4}"  # a Chinese mobile: 138 0013 8000
    r"|[1-9][0-9][ \-]9?[0-9]{4}-[0-9]{4}"  # Brazil, Japan: 11 91234-5678, 75-6508-8995
    r"|[5-9][0-9]{2} [0-9]{3} [0-9]{3}"  # a Spanish or Polish mobile: 612 345 678
    r"|[1-9][0-9] [0-9]{3} [0-9]{2} [0-9]{2}"  # a Polish landline: 22 657 07 04
    r"|[6-9][0-9]{4} [0-9]{5}"  # an Indian mobile: 98765 43210
    r")" + _EXTENSION + r"(?![0-9A-Za-z]|[.,/\-][0-9])"
)
_SHAPED = re.compile(r"[ ().\-/]")
_GROUPS = re.compile(r"[0-9]{2,}")  # all ending in 0 (`200 400 3200`): quantities


# A day, month and year with spaces (`05 01 2024`), two years (`(1999) 2000`), a unit after
# it (`250 500 1000 ml`): a date, years, quantities.
_SPACED_DATE = re.compile(rf"(?<![0-9]){_DAY} {_MONTH} {_YEAR}(?![0-9])")
_YEARS = re.compile(rf"(?<![0-9]){_YEAR}(?![0-9])")
_YEAR_IN_BRACKETS = re.compile(rf"\({_YEAR}\)")  # `LEGO Icons (2023) 10294`: no area code
_UNIT = re.compile(
    r"[ ]?(?:ml|cl|l|mm|cm|m|km|g|kg|mg|oz|lb|lbs|gb|mb|kb|tb|px|pcs|pc|sheets|%)\b",
    re.IGNORECASE,
)
# A month and year in a run (`03/2024 0042`), and the words that name what a number in
# free text is when it is not a phone (`SKU 012-345-6789`, `Article 012 345 678`).
_MONTH_YEAR = re.compile(rf"(?<![0-9]){_MONTH}[/.]{_YEAR}(?![0-9])")
# A label is right before the number: nothing between but punctuation, or a word for
# "number" (`Order number: 012-345-6789`, `phone no. 555-123-4567`, `?order_id=...`).
_NUMBER_WORD = r"(?:[\s_.:]*(?:number|num|nummer|no|nr|#)\.?)?[\s:=#._\-]*$"
_ID_LABEL = re.compile(
    r"(?:(?<![a-z0-9])(?:sku|part|item|art|article|order|invoice|ref|reference|serial|model"
    r"|no|nr|id|tracking|isbn|ean|upc|gtin|card|code|batch|lot|ticket|account|iban)|#)"
    + _NUMBER_WORD,
    re.IGNORECASE,
)
_PHONE_WORDS = "(?:" + "|".join(sorted(_PHONE_LABELS, key=len, reverse=True)) + ")"
_PHONE_LABEL = re.compile(r"(?<![a-z0-9])" + _PHONE_WORDS + _NUMBER_WORD, re.IGNORECASE)
_CODE = re.compile(r"(?=[^ ]*[0-9])(?=[^ ]*[A-Za-z])[A-Za-z0-9]+")  # letters and digits


def _national_like(match: re.Match[str]) -> bool:
    number = match.group("number")  # without its extension
    around = match.string[max(0, match.start() - 6) : match.end()]  # a date begun before
    digits = _NOT_DIGIT.sub("", number)
    return (
        9 <= len(digits) <= 15
        and not digits.startswith("000")  # no country code starts with 0: `0000 0000 0000`
        and _SHAPED.search(number.strip()) is not None
        and not _DATE.search(around)
        and not _MONTH_YEAR.search(around)
        and not _SPACED_DATE.search(around)
        and not _YEAR_IN_BRACKETS.search(number)
        and len(_YEARS.findall(number)) < 2
        and not _UNIT.match(match.string, match.end())
        and not all(group.endswith("0") for group in _GROUPS.findall(number))
        and (_labelled_phone(match) or not _labelled_id(match))
    )


def _labelled_phone(match: re.Match[str]) -> bool:
    """A word for a phone just before the number (`phone no. 555-123-4567`)."""
    return _PHONE_LABEL.search(match.string, max(0, match.start() - 24), match.start()) is not None


def _labelled_id(match: re.Match[str]) -> bool:
    """A word for an id just before the number, or a code of letters and digits it ends
    (`Tracking 1Z 999 AA1 01 2345 6784`)."""
    before = match.string[max(0, match.start() - 16) : match.start()]
    if _ID_LABEL.search(before):
        return True
    words = before.split()
    return bool(words) and before[-1:].isspace() and _CODE.fullmatch(words[-1]) is not None


# A word for a phone, then 9 to 15 digits written without separators (`Phone: 5551234567`).
_LABELLED_DIGITS = re.compile(
    r"(?<![a-z0-9/])" + _PHONE_WORDS + r"(?:\s*(?:number|num|no|nr|#)\.?)?[\s:=#.\-]{0,3}"
    r"(?<![0-9/])[0-9]{9,15}(?![0-9])",
    re.IGNORECASE,
)


def holds_national_phone(text: str) -> bool:
    """Whether `text` holds a national phone number (no "+": `(555) 123-4567`,
    `020 7946 0958`) anywhere; digits of other scripts and invisible characters are read
    as `visible_text` does. For free-form fields: a search of every string of every event
    costs too much, so only the fields that take free text ask."""
    if len(text) < 9:
        return False
    value = readable_text(text)
    if "://" in value:  # in a URL's query a "+" is a space (`?phone=555+123+4567`)
        value = value.replace("+", "-")
    if any(_national_like(m) for m in _NATIONAL.finditer(value)):
        return True
    return _LABELLED_DIGITS.search(value) is not None


# For a search of a whole serialised event: digits become "0", the separators a national
# number uses "-" and every other byte "x", so `bytes.find` finds runs at C speed.
_RUNS = bytes(48 if 48 <= b <= 57 else 45 if b in b" ().-/" else 120 for b in range(256))


def national_phone_in_json(body: bytes) -> bool:
    """Whether some string of the serialised event `body` may hold a national phone number
    (true for every one that does; rarely true for one that does not): only a run of
    digits and separators with 9 digits and a separator before 2 of them has
    `holds_national_phone` asked about it and its labels. Hex digests, UUIDs, epoch
    times, amounts and IP addresses cost one `translate` and a few `find`s (~1 µs)."""
    if not body.isascii():
        body = readable_text(body.decode()).encode()
    runs = body.translate(_RUNS)
    at = runs.find(b"-00")  # every national number has a group of 2 digits after a separator
    while at != -1:
        start = runs.rfind(b"x", 0, at) + 1
        end = runs.find(b"x", at)
        end = len(runs) if end == -1 else end
        if (
            runs.count(b"0", start, end) >= 9
            and _may_start(body, start, end)
            and holds_national_phone(body[max(0, start - 30) : end + 12].decode(errors="ignore"))
        ):
            return True  # (read with a label before it and an extension after it)
        at = runs.find(b"-00", end)
    return False


def _may_start(body: bytes, start: int, end: int) -> bool:
    """Whether a number can begin in the run `body[start:end]`: glued to a letter or digit
    before it (`…-a716-446655440000` of a UUID) only after a space or bracket inside the
    run, or right after a word for a phone (`tel-5551234567`)."""
    if start == 0 or not body[start - 1 : start].isalnum():
        return True
    run = body[start:end]
    if b" " in run or b"(" in run or b")" in run:
        return True
    label = body[max(0, start - 8) : start].decode(errors="ignore")  # may cut a character
    return label.lower().endswith(_PHONE_LABELS)


def whole_national_phone(text: str) -> bool:
    """Whether all of `text` is one national phone number (see `holds_national_phone`)."""
    if len(text) < 9:
        return False
    value = readable_text(text).strip()
    match = _NATIONAL.fullmatch(value)
    return match is not None and _national_like(match)


def whole_phone(text: str) -> bool:
    """Whether all of `text` (read as `visible_text`) is one international phone number."""
    match = _PHONE.fullmatch(visible_text(text).strip())
    return match is not None and _phone_like(match)


def hash_by_value(text: str) -> str | None:
    """The platform hash of `text` if all of it is an email or a phone number (national
    ones included), else None."""
    if _plain(text):
        return hash_phone(text) if whole_national_phone(text) else None
    value = visible_text(text).strip()
    if is_email(value.lower()):
        return hash_email(value)
    if whole_phone(value) or whole_national_phone(value):
        return hash_phone(value)
    return None
