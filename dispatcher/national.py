"""National phone numbers (no "+") in text: the shapes people write them in, what reads
like one and is not, and the search of a whole serialised event for one."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from dispatcher.currencies import ISO_4217
from dispatcher.reading import (
    DATE,
    DAY,
    ESCAPE_DEPTH,
    MONTH,
    NOT_DIGIT,
    PHONE_WORD_LABELS,
    YEAR,
    readable_text,
    reads_differently_pattern,
)

# A national number, written without "+" the way people write one: `(555) 123-4567`,
# `555.123.4567`, `1-555-123-4567`, `(0161) 496 0066`, `020 7946 0958`, `04 15 39 15 00`,
# `8 (066) 907-43-91`, with an extension after it (`x123`, `ext. 12`). Only these shapes:
# a plain digit string is an id, an order number or an amount, never a phone.
_EXTENSION = r"(?:[ ]?(?:x|ext\.?)[ ]?[0-9]{1,6})?"
# A file's extension right after the digits: `Scan 358 231 6269.pdf` names a file.
_FILE_EXTENSION = r"\.(?:pdf|jpe?g|png|gif|webp|tiff?|docx?|xlsx?|pptx?|csv|txt|zip|xml)\b"
_NATIONAL = re.compile(  # after a comma or a slash too, or a word's full stop (`Doe,555-…`)
    r"(?:(?<![0-9A-Za-z.,/\-])|(?<=[^0-9][,/])|(?<=[A-Za-z][.]))(?P<number>"
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
    r")" + _EXTENSION + r"(?![0-9A-Za-z]|[.,/\-][0-9]|" + _FILE_EXTENSION + ")"
)
_SHAPED = re.compile(r"[ ().\-/]")
_GROUPS = re.compile(r"[0-9]{2,}")


def _round(number: str) -> bool:
    """Groups all ending in 00 and none starting with 0 (`200 400 3200`): quantities."""
    return all(g.endswith("00") and not g.startswith("0") for g in _GROUPS.findall(number))


# A day, month and year with spaces (`05 01 2024`), two years (`(1999) 2000`), a unit after
# it (`250 500 1000 ml`): a date, years, quantities.
_SPACED_DATE = re.compile(rf"(?<![0-9]){DAY} {MONTH} {YEAR}(?![0-9])")
_YEARS = re.compile(rf"(?<![0-9]){YEAR}(?![0-9])")
_YEAR = re.compile(YEAR)
_YEAR_IN_BRACKETS = re.compile(rf"\({YEAR}\)")  # `LEGO Icons (2023) 10294`: no area code
_UNIT = re.compile(
    r"[ ]?(?:ml|cl|l|mm|cm|m|km|g|kg|mg|oz|lb|lbs|gb|mb|kb|tb|px|pcs|pc|sheets|%)\b",
    re.IGNORECASE,
)
# A month and year in a run (`03/2024 0042`), and the words that name what a number in
# free text is when it is not a phone (`SKU 012-345-6789`, `Article 012 345 678`).
_MONTH_YEAR = re.compile(rf"(?<![0-9]){MONTH}[/.]{YEAR}(?![0-9])")
# A label is right before the number: nothing between but punctuation, or a word for
# "number" (`Order number: 012-345-6789`, `phone no. 555-123-4567`, `?order_id=...`).
_NUMBER_WORD = r"(?:[\s_.:\-]*(?:number|num|nummer|no|nr|#)\.?)?[\s:=#._\-/,]*$"
_ID_LABEL = re.compile(
    r"(?:(?<![a-z0-9])(?:sku|part|item|art|article|order|invoice|ref|reference|serial|model"
    r"|no|nr|id|tracking|isbn|ean|upc|gtin|card|code|batch|lot|ticket|account|iban|po"
    r"|bestellnr|bestellung|auftrag|rechnung|commande|pedido|ordine|заказ|артикул|счет|счёт"
    r")|#|n°|nº|№)" + _NUMBER_WORD,
    re.IGNORECASE,
)
_PHONE_WORDS = "(?:" + "|".join(sorted(PHONE_WORD_LABELS, key=len, reverse=True)) + ")"
_PHONE_LABEL = re.compile(r"(?<![a-z0-9])" + _PHONE_WORDS + _NUMBER_WORD, re.IGNORECASE)
_CODE = re.compile(r"(?=[^ ]*[0-9])(?=[^ ]*[A-Za-z])[A-Za-z0-9]+")  # letters and digits


def _national_like(match: re.Match[str]) -> bool:
    number = match.group("number")  # without its extension
    around = match.string[max(0, match.start() - 6) : match.end()]  # a date begun before
    digits = NOT_DIGIT.sub("", number)
    return (
        9 <= len(digits) <= 15
        and not digits.startswith("000")  # no country code starts with 0: `0000 0000 0000`
        and _SHAPED.search(number.strip()) is not None
        and not DATE.search(around)
        and not _MONTH_YEAR.search(around)
        and not _SPACED_DATE.search(around)
        and not _YEAR_IN_BRACKETS.search(number)
        and len(_YEARS.findall(number)) < 2
        and not _UNIT.match(match.string, match.end())
        and (
            _labelled_phone(match) or not (_labelled_id(match) or _round(number) or _priced(match))
        )
        and _starts_freely(match)
        and _run_digits(match) <= 15
    )


def _run_digits(match: re.Match[str]) -> int:
    """The digits of the whole run of digit groups and spaces the number is part of: more
    than 15 (no phone number has more) is a longer code written in groups, a parcel's
    tracking number or an IBAN (`9400 9526 0451 5437 1489 54`)."""
    text, start, end = match.string, match.start(), match.end()
    while start and (text[start - 1].isdigit() or text[start - 1] == " "):
        start -= 1
    while end < len(text) and (text[end].isdigit() or text[end] == " "):
        end += 1
    return sum(c.isdigit() for c in text[start:end])


# A currency right before a number makes it a price (`$597 833 937`, `CHF 521 197 774`)
# and one right after it too (`765 907 182 ₽`, `310 450 000 EUR`): a sign, or an ISO 4217
# code.
_CURRENCY = r"(?:[$€£¥₽₹₩]|(?<![A-Za-z])[A-Z]{3}(?![A-Za-z]))"
_CURRENCY_BEFORE = re.compile(r"(?:" + _CURRENCY + r"|[A-Z]{1,2}\$)[ ]?$")  # or C$, HK$
_CURRENCY_AFTER = re.compile(r"[ ]?" + _CURRENCY)


def _priced(match: re.Match[str]) -> bool:
    start = match.start()
    for found in (
        _CURRENCY_BEFORE.search(match.string, max(0, start - 5), start),
        _CURRENCY_AFTER.match(match.string, match.end()),
    ):
        word = found.group().strip() if found else ""
        if word and (not word.isalpha() or word in ISO_4217):
            return True
    return False


def _starts_freely(match: re.Match[str]) -> bool:
    """Whether the number begins where a phone number is written: glued to a slash or a
    full stop only after a word for a phone (`/tel/555-…`, `tel.555-…`; else it is an id
    of a URL's path or a code: `/ticket/012-3456-7890`, `ACME.0123-456-789`), glued to a
    comma after a word outside a URL (`Jane,Doe,555-123-4567`, a row of a CSV file: so
    `Bundle,0123-456-789` too; not `?ids=7,555-123-4567`)."""
    start = match.start()
    glued = match.string[start - 1 : start] if start else ""
    if glued not in ("/", ".", ","):
        return True
    if _labelled_phone(match):
        return True
    if glued != ",":
        return False
    return match.string[start - 2 : start - 1].isalpha() and "://" not in match.string[:start]


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


def _pair(words: str) -> str:
    """One word for a phone, or two joined by a slash (`Tel./Fax`, `Tel/WhatsApp`)."""
    return words + r"(?:\.?/" + words + ")?"


# A word for a phone, then 9 to 15 digits written without separators (`Phone: 5551234567`).
_NUMBER_AFTER = r"(?:[\s._\-]*(?:number|nummer|num|no|nr|#)\.?)?"  # `Tel.-Nr.`, `phone_number`
_DIGITS_LABEL = r"(?<![a-z0-9/])" + _pair(_PHONE_WORDS) + _NUMBER_AFTER + r"[\s:=#.\-]{0,3}"
_LABELLED_DIGITS = re.compile(_DIGITS_LABEL + r"(?<![0-9/])[0-9]{9,15}(?![0-9])", re.IGNORECASE)
_LABEL_END = re.compile(_DIGITS_LABEL + r"$", re.IGNORECASE)
# A link that opens a chat or a message to a number, its digits the number: WhatsApp's
# `https://wa.me/15551234567`, `sms:5551234567` (the same digits after `wa.me/x` or
# `cms:` are a path's or a scheme's).
_LINK = r"(?:(?<![\w.\-])wa\.me/|(?<![a-z0-9])(?:sms|tel|callto|skype|viber|facetime):(?://)?"
_LINK += r"(?:[a-z]+\?number=)?)"  # `viber://chat?number=...`
_LINKED_DIGITS = re.compile(_LINK + r"[0-9]{9,15}(?![0-9])", re.IGNORECASE)
_LINK_END = re.compile(_LINK + r"$", re.IGNORECASE)
# A label, then groups that only a label makes a phone number: a local number of 7 or 8
# digits, after an area code or not (`Tel: 555-1234`, `тел. 706 69 07`, `Phone: 4656
# 3414`, `Tel. 08-60 42 30`), or groups of 3, 3 and 4 from any digit (`Tel: 187 928
# 2406`). The label is a word that names nothing but a phone (not mobile, cell, call or
# handy: `Mobile 1080 2400` is a screen), standing alone, with a colon or an
# abbreviation's full stop (or two such words joined by a slash: `Tel./Fax:`); no group
# but the last after 3 digits may be a year (`Tel: 555-2012`), the pair no opening hours
# (`Tel: 0900-1730`, `Tel: 830-1715`), and no unit, price or letter may follow.
_NOT_ONLY_PHONES = {"mobile", "mobil", "mob", "móvil", "movil", "cell", "call", "handy"}
_NOT_ONLY_PHONES |= {"cellphone", "celular", "msisdn"}  # mobiles: never 7 or 8 digits
_ONLY_PHONE_WORDS = [w for w in PHONE_WORD_LABELS if w not in _NOT_ONLY_PHONES]
_SHORT_LABEL = (  # its punctuation as `_LABEL_END` reads it
    r"(?<![\w\-/.])"
    + _pair("(?:" + "|".join(sorted(_ONLY_PHONE_WORDS, key=len, reverse=True)) + ")")
    + _NUMBER_AFTER
    + r"(?:\.?:|[ ]?:|\.)[ ]?"
)
_SHORT = (
    r"(?:(?:\(?0[0-9]{1,3}\)?[ .\-/]?)?(?:[0-9]{3}[ .\-][0-9]{2}[ .\-][0-9]{2}"  # 706 69 07
    r"|[0-9]{3,4}[ .\-][0-9]{4})"  # 555-1234, 4656 3414
    r"|\(?0[0-9]{1,3}\)?[ .\-/]?[0-9]{2}[ .\-][0-9]{2} [0-9]{2}"  # 08-60 42 30
    r"|[0-9]{3} [0-9]{3} [0-9]{4}"  # 187 928 2406
    r"|3[0-9]{2} [0-9]{6,7}|[0-9]{2} [0-9]{4} [0-9]{4})"  # Italy 347 1234567, Mexico 55 1234 5678
)
_LABELLED_SHORT = re.compile(
    _SHORT_LABEL + r"(?P<number>" + _SHORT + r")(?![0-9A-Za-z]|[.,/\-][0-9])", re.IGNORECASE
)
_HHMM = re.compile(r"(?:[01]?[0-9]|2[0-3])(?:00|15|30|45)")  # 830, 0900, 1715: hours
_SHORT_UNIT = re.compile(
    r"[ ]?(?:pixels?|mah|dpi|ppm|pages|blatt|seiten|stück"
    r"|\u0440\u0443\u0431|₽|\$|€|£|eur|usd|gbp)(?!\w)",  # (rub)
    re.IGNORECASE,
)


def _labelled_short(value: str) -> bool:
    """A local number right after a label (`_LABELLED_SHORT`), not a year, hours or a size."""
    for match in _LABELLED_SHORT.finditer(value):
        groups = _GROUPS.findall(match["number"])
        if (
            not _year_in(groups)
            and not (len(groups) == 2 and all(_HHMM.fullmatch(g) for g in groups))
            and not _UNIT.match(value, match.end())
            and not _SHORT_UNIT.match(value, match.end())
            and not _round(match["number"])
        ):
            return True
    return False


def _year_in(groups: list[str]) -> bool:
    """Whether a group is a year: only the last may be, and not after 4 digits (`Tel:
    555-2012` is a phone; `Tel: 0315 2024` a date, `Tel: 2024 0315` too)."""
    if any(_YEAR.fullmatch(g) for g in groups[:-1]):
        return True
    return _YEAR.fullmatch(groups[-1]) is not None and len(groups[-2]) == 4


def holds_national_phone(text: str) -> bool:
    """Whether `text` holds a national phone number (no "+": `(555) 123-4567`,
    `020 7946 0958`) anywhere; digits of other scripts and invisible characters are read
    as `readable_text` does. The fields that take free text ask as they are validated;
    every other string is found by `national_phone_in_json`, which asks only about the
    runs of digits that may be one."""
    if len(text) < 9:
        return False
    value = readable_text(text)
    if "+" in value and ("://" in value or "=" in value) and _holds_in_query(value):
        return True
    return _holds(value)


def _holds_in_query(value: str) -> bool:
    """In a query a "+" is a space (`?phone=555+123+4567`): read as a dash and as a space,
    a number counts only right after a word for a phone (a parameter named for one), as
    a query's list of numbers is none (`?zips=90210+90211`, `?ids=701+702+703`)."""
    return _holds(value.replace("+", "-"), labelled=True) or _holds(
        value.replace("+", " "), labelled=True
    )


def _holds(value: str, labelled: bool = False) -> bool:
    """A national number in `value` (only one right after a word for a phone: `labelled`)."""
    flat = value.encode().translate(_FLAT)
    if flat.find(_NINE) == -1:  # no run of 9 digits and separators (most text, at C speed):
        return flat.find(_EIGHT) != -1 and _labelled_short(value)  # `Tel:555-1234` at most
    if any(
        _national_like(m) and (not labelled or _labelled_phone(m))
        for m in _NATIONAL.finditer(value)
    ):
        return True
    return (
        _LABELLED_DIGITS.search(value) is not None
        or _LINKED_DIGITS.search(value) is not None
        or _labelled_short(value)
    )


# For a search of a whole serialised event, two views of its bytes: in `_RUNS` digits
# become "0", the separators a national number uses "-" and every other byte "x"; in
# `_FLAT` digits and separators alike are "0". `bytes.find` then finds, at C speed, the
# runs of 9 or more digits and separators, where a number can be.
_SEPARATORS = b" ().-/"
_RUNS = bytes(48 if 48 <= b <= 57 else 45 if b in _SEPARATORS else 120 for b in range(256))
_FLAT = bytes(48 if 48 <= b <= 57 or b in _SEPARATORS else 120 for b in range(256))
_NINE, _EIGHT = b"0" * 9, b"0" * 8


def national_phone_in_json(body: bytes) -> bool:
    """Whether some string of the serialised event `body` (as `to_payload` makes it: a
    body with a JSON escape is searched string by string instead) may hold a national
    phone number: true for every one `holds_national_phone` finds in a string of it,
    rarely true for one that holds none, but for a local number glued to its label's
    colon (`Tel:555-1234`, 8 characters: searching for such runs costs a quarter more
    time, and every field that takes free text asks `holds_national_phone` itself).
    Only a run of 9 digits or more (7 right after what may end a label: `Tel: 555-1234`),
    with a separator before 2 of them and room for a number to begin, or bare right after
    such a label (`Phone:5551234567`), is read closely: hex digests, UUIDs, epoch times,
    amounts, IPv4 addresses, versions and decimals cost two `translate`s and a few
    `find`s."""
    if b"%" in body or not body.isascii():
        body = _searchable(body)
    query = b"+" in body and (b"://" in body or b"=" in body)  # there a "+" is a space:
    if query and (
        _holds_in(body.replace(b"+", b"-"), labelled=True)
        or _holds_in(body.replace(b"+", b" "), labelled=True)
    ):
        return True  # read as a dash and as a space, as `_holds_in_query` reads it
    return _holds_in(body)


def _holds_in(body: bytes, labelled: bool = False) -> bool:
    flat = body.translate(_FLAT)
    runs = b""  # made when a run is worth a look: most events hold only JSON numbers
    start = flat.find(_NINE)  # the start of a run: the search begins after the last one
    while start != -1:
        end = flat.find(b"x", start)
        end = len(flat) if end == -1 else end
        run = body[start:end]
        bare = run.strip(_SEPARATORS).isdigit()
        if not _json_number(body, start) and not (
            bare and _in_hex(body, start - 1) and _in_hex(body, end)  # or in a hex digest
        ):
            runs = runs or body.translate(_RUNS)
            digits = runs.count(b"0", start, end)
            if (
                (digits >= 9 or (digits >= 7 and _label_ends(body, start)))
                and _worth_reading(body, runs, start, end, bare)
                and _window_holds(body[max(0, start - 30) : end + 12], labelled)
            ):
                return True  # (read with a label before it and an extension after it)
        start = flat.find(_NINE, end)
    return False


def _window_holds(window: bytes, labelled: bool) -> bool:
    """`holds_national_phone` of the text around a run (only after a label: `labelled`)."""
    text = window.decode(errors="ignore")
    return _holds(readable_text(text), labelled=True) if labelled else holds_national_phone(text)


def _searchable(body: bytes) -> bytes:
    """`body` as `holds_national_phone` reads a string: percent-escapes decoded, and other
    scripts' digits, dashes, spaces and invisible characters read as ASCII (only when
    there is one: accented or Cyrillic text is left as it is)."""
    if b"%" in body:
        for _ in range(ESCAPE_DEPTH):  # `%2520`: escaped again, as nested redirects do
            if (decoded := unquote_to_bytes(body)) == body:
                break
            body = decoded
    if not body.isascii():
        text = body.decode(errors="ignore")
        if reads_differently_pattern().search(text):
            body = readable_text(text).encode()
    return body


def _json_number(body: bytes, start: int) -> bool:
    """Whether the run at `start` is a JSON number (`"event_time":1796409296`), not a
    string's start (`"note":":555-123-4567"`, whose quote follows a colon)."""
    return body[start - 2 : start] == b'":' and body[start - 3 : start - 2] != b":"


def _in_hex(body: bytes, at: int) -> bool:
    return 0 <= at < len(body) and body[at] in _HEX_LETTERS


_HEX_LETTERS = frozenset(b"abcdefABCDEF")


def _worth_reading(body: bytes, runs: bytes, start: int, end: int, bare: bool) -> bool:
    """Whether the run `body[start:end]` of 9 digits or more (`bare`: digits with no
    separator but around them) could be, or end, a national number."""
    run = body[start:end]
    if bare:  # digits alone: a phone only right after a label (`Phone:5551234567.`) or
        # a link to one (`wa.me/15551234567`)
        first = start + len(run) - len(run.lstrip(_SEPARATORS))  # its first digit
        return (
            _label_ends(body, start)
            or _LINK_END.search(body[max(0, first - 24) : first].decode(errors="ignore"))
            is not None  # (`viber://chat?number=`: 20 characters)
        )
    if b"-00" not in runs[start:end]:  # every national number has 2 digits after a separator
        return False
    core = run.strip(_SEPARATORS)
    if core.replace(b".", b"").isdigit():  # digits and dots only
        groups = core.split(b".")
        if len(groups) == 4 and all(len(g) <= 3 for g in groups):
            return False  # an IPv4 address
        if any(len(g) == 1 for g in groups[1:]) or (len(groups) == 2 and len(groups[0]) > 5):
            return False  # a version (`120.0.6099.144`), a decimal or a Metrica ClientId
    if not body[start - 1 : start].isalnum():
        return True
    # Glued to a letter or digit (`…-a716-446655440000` of a UUID), a number can begin
    # only after a space or a bracket inside the run, or right after a word for a phone.
    return (
        b" " in run or b"(" in run or b")" in run or run[:1] in (b"/", b".")  # `/tel/555-…`
        or _label_ends(body, start)
    )  # fmt: skip


def _label_ends(body: bytes, start: int) -> bool:
    """Whether a word for a phone (a word for "number", punctuation) ends at `start`."""
    tail = body[max(0, start - 24) : start]
    last = tail[-1:]
    if last not in (b":", b"=", b"#", b".") and not (last.isalpha() or last >= b"\x80"):
        return False
    if not tail[-8:].translate(None, b"0123456789abcdefABCDEF"):
        return False  # inside a hex digest: every word for a phone has a letter past f
    return _LABEL_END.search(tail.decode(errors="ignore")) is not None


def whole_national_phone(text: str) -> bool:
    """Whether all of `text` is one national phone number (see `holds_national_phone`)."""
    if len(text) < 9:
        return False
    value = readable_text(text).strip()
    match = _NATIONAL.fullmatch(value)
    return match is not None and _national_like(match)
