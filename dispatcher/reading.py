"""How text is read where personal data may hide: escapes decoded, compatibility forms
folded, digits of other scripts read as ASCII digits, invisible characters dropped; the
words that label a phone, and dates."""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from urllib.parse import unquote

# Words that label a phone, glued to its "+" (Tel+44, Telefon+49, Ph+44, Tlf+47, Tél+33)
# or before a national number (`phone no. 555-123-4567`, `Handy 0171 1234567`).
# `Ph` and `Fon` only glued to a "+" (`PH 0123456789` is a pH or a country).
PHONE_WORD_LABELS: tuple[str, ...] = (
    "telephone", "telefon", "teléfono", "телефон", "tel", "tél", "phone", "tlf", "mobile",
    "mobil", "mob", "móvil", "movil", "cell", "call", "fax", "whatsapp", "handy", "тел",
    "cellphone", "celular", "telefono", "telefone", "msisdn",
)  # fmt: skip
PHONE_LABELS = (*PHONE_WORD_LABELS, "ph", "fon")
NOT_DIGIT = re.compile(r"[^0-9]")
DAY, MONTH, YEAR = r"(?:0?[1-9]|[12][0-9]|3[01])", r"(?:0?[1-9]|1[0-2])", r"(?:19|20)[0-9]{2}"
# A date inside a "+" run makes it no phone (`Bundle +2 2024/01/15`, `+1 12/31/2024`).
DATE = re.compile(rf"{YEAR}[-/.]{MONTH}[-/.]{DAY}(?![0-9])|(?<![0-9]){DAY}[-/.]{DAY}[-/.]{YEAR}")
_HIDDEN = {"Cf", "Mn", "Me"}  # format characters, and marks left after composing
# Characters that print as nothing although no format category says so: the Braille
# blank and the Hangul fillers.
_BLANKS = {"\u2800", "\u115f", "\u1160", "\u3164", "\uffa0"}


# How many times an escape may be escaped again and still be read (`%25252540` is "@").
ESCAPE_DEPTH = 8
# An HTML character reference: numeric (`&#64;`, `&#x40;`), or a name for a character an
# email or phone number is written with (`&commat;`, `&plus;`, `&period;`).
# A named one needs its ";" (`&num=20` in a query is a parameter).
HTML_REFERENCE = re.compile(
    r"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|(?:commat|plus|period|num);)"
)
HTML_REFERENCE_BYTES = re.compile(HTML_REFERENCE.pattern.encode())


def unreferenced(text: str) -> str:
    """`text` with its `HTML_REFERENCE`s decoded, and nothing else (`&para` stays)."""
    if "&" not in text:  # most texts: no regular expression run
        return text
    return HTML_REFERENCE.sub(lambda m: html.unescape(m.group()), text)


def visible_text(text: str) -> str:
    """`text` as a reader sees it where an email or a phone number could hide: percent-
    escapes decoded (`%2B44%2020...` in a URL), then compatibility forms folded (fullwidth
    plus, digits, at sign), and where a "+" or "@" is left, digits of any script read as
    ASCII digits and invisible characters (zero-width, bidi marks, byte order marks,
    joiners, variation selectors) dropped. Its bare "+" stay "+": `visible_readings` reads
    them as spaces too. HTML character references that may stand for one (`&#64;`,
    `&commat;`, `&#43;`) are decoded too."""
    for _ in range(ESCAPE_DEPTH):  # `%2540`: escaped again, as nested redirect URLs do
        if "%" not in text or (decoded := unquote(text)) == text:
            break
        text = decoded
    text = unreferenced(text)
    if text.isascii():
        return text
    folded = unicodedata.normalize("NFKC", text)
    if "+" not in folded and "@" not in folded:  # no phone or email to find: as it is
        return folded
    return "".join(_visible_char(c) for c in folded if _shown(c))


def visible_readings(text: str) -> tuple[str, ...]:
    """`visible_text` of `text`, and where it holds an escaped "+" (`%2B`) and a bare one,
    as a form-encoded text (`urlencode`) reads too, its bare "+" spaces (`%2B44+20+7946+0958`):
    a search looks in both, so that neither reading hides what the other shows
    (`+447700900123` beside `C%2B%2B` in another field)."""
    if "+" in text and "%2" in text and "%2b" in text.lower():
        return visible_text(text), visible_text(text.replace("+", " "))
    return (visible_text(text),)


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
# and middle dots, which some write between a number's groups (`+81 90・1234・5678`):
# katakana and halfwidth middle dots, the Latin one, hyphenation point, bullets
_DOTS |= {"\u30fb", "\uff65", "\u00b7", "\u2027", "\u2022", "\u2219"}
_DASHES = {chr(c) for c in range(0x2010, 0x2016)} | {"\u2212"}


def readable_text(text: str) -> str:
    """`visible_text`, and for every non-ASCII text (not only where a "+" or "@" is) digits
    of any script as ASCII digits, dashes as "-", invisible characters dropped: what the
    search for national numbers reads."""
    text = visible_text(text)
    if text.isascii():
        return text
    return "".join(_visible_char(c) for c in text if _shown(c))


@functools.cache
def reads_differently_pattern() -> re.Pattern[str]:
    """A non-ASCII character that `readable_text` changes where a number may be: a digit,
    a space, a dash, an invisible character or mark, a compatibility form, and anything
    outside the Basic Multilingual Plane but emoji."""
    read = ("Nd", "No", "Zs", "Zl", "Zp", "Cf", "Mn", "Me")
    chars = [c for c in map(chr, range(0x80, 0x10000)) if unicodedata.category(c) in read]
    chars += [*_DASHES, *_BLANKS, *_DOTS]
    rest = "\uff00-\uffef\U00010000-\U0001efff\U0001fbf0-\U0001fbf9\U000e0000-\U000e01ef"
    return re.compile("[" + re.escape("".join(chars)) + rest + "]")


def labelled_at(text: str, at: int) -> bool:
    """Whether a word for a phone ends right at `at` in `text` (`Tel+44`, not `recall+1`)."""
    before = text[max(0, at - 10) : at].lower()
    return any(
        before.endswith(label) and not before[-len(label) - 1 : -len(label)].isalpha()
        for label in PHONE_LABELS
    )
