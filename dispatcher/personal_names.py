"""Names that say a value is personal data: a vNative dimension named `customer_email`,
`mobile_phone` or `first_name`, a URL query parameter `first_name=`. Names are read as
`dimension_key` spells them (firstName, First-Name and "first name" are first_name)."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterator
from urllib.parse import unquote, unquote_plus

from dispatcher.identity import (
    hash_email,
    hash_name,
    hash_phone,
    is_email,
    is_sha256,
    number_like,
    sha256_hex,
)
from dispatcher.reading import unreferenced

# Dimension names (compared after `dimension_key`) whose values are personal data, and how
# each is normalised before hashing. The seed's sample sends first_name and last_name.
_EMAIL_WORDS = {"email", "mail", "emailaddress", "mailaddress", "courriel", "correo", "почта"}
_EMAIL_WORDS |= {"邮箱"}
_PHONE_WORDS = {"phone", "mobile", "tel", "telephone", "msisdn", "cell", "phonenumber", "fax"}
_PHONE_WORDS |= {"whatsapp", "telefono", "telefone", "telefon", "handy", "телефон"}
_PHONE_WORDS |= {"cellphone", "mobilephone", "homephone", "workphone", "phoneno"}
_PHONE_WORDS |= {"mob", "mobno", "tlf", "cel", "celular", "movil", "telefonnummer"}
_PHONE_WORDS |= {"telefoonnummer", "rufnummer", "handynummer", "telefonu", "мобильный"}
_PHONE_WORDS |= {"電話番号", "手机号", "手机", "电话", "전화번호"}
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
_NAME_WORDS |= {"contactperson", "fio", "kontaktperson", "ansprechpartner", "kundenname"}
_NAME_WORDS |= {"namn", "naam", "klantnaam", "お名前", "名字", "客户姓名", "이름", "성명"}
_NAME_WORDS |= {"고객명", "jmeno", "prijmeni", "priezvisko", "tussenvoegsel", "nomcomplet"}
_NAME_WORDS |= {"姓", "名", "cardholder", "accountholder", "ccname", "nameoncard"}
_PERSON_WORDS = {"first", "last", "full", "given", "family", "sur", "customer", "client"}
_PERSON_WORDS |= {"user", "buyer", "contact", "member", "billing", "shipping", "person"}
_PERSON_WORDS |= {"recipient", "cardholder", "holder", "owner", "payer", "sender", "middle"}
_PERSON_WORDS |= {"f", "l", "m", "nick", "maiden", "display", "real", "legal", "guest"}
_PERSON_WORDS |= {"passenger", "patient", "cust", "card", "ship", "bill", "to", "from"}
_PERSON_WORDS |= {"traveler", "traveller", "applicant", "student", "employee"}
# and other languages' ways of saying the same (`nombre_completo`, `vollständiger Name`);
# `nom_de_famille`, `nombre_del_cliente`: a "de" between two words joins them (a last
# one is a language, `name_de`); `nom_de_produit` stays a product's
_PERSON_WORDS |= {"completo", "completa", "complet", "vollstandiger", "полное", "famille"}
_PERSON_WORDS |= {"paterno", "materno", "segundo", "usuario", "utilisateur", "benutzer"}
_PERSON_WORDS |= {"kunde", "cliente", "titular", "kunden", "volledige", "vor"}
# a joining word between two others: `nom_de_famille`, `nome_e_cognome`, `nom_et_prenom`,
# `nombre_y_apellidos`, `imie_i_nazwisko`, `vor_und_nachname`, `name_des_kunden`
_JOINING = {"de", "del", "da", "do", "du", "des", "e", "et", "y", "i", "und", "on"}
# Names in two words where neither says "name" alone: Turkish `ad soyad`, `isim soyisim`,
# and a card's or an account's holder (`card_holder`, `cc-name`)
_NAME_KEYS = {"ad_soyad", "adi_soyadi", "isim_soyisim", "card_holder", "account_holder"}
_NAME_KEYS |= {"cc_name", "cc_holder", "card_holder_name", "account_holder_name"}
_NAME_KEYS |= {"ship_to_name", "bill_to_name", "name_on_card"}


def _email_if_one(text: str) -> str:
    return hash_email(text) if is_email(text.strip().lower()) else text


def _phone_if_one(text: str) -> str:
    return hash_phone(text) if number_like(text) else text


KEEPING = (_email_if_one, _phone_if_one)  # hash a value of their kind, keep any other


def hash_named(hasher: Callable[[str], str], raw: object) -> str:
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
def hasher_of(name: str) -> Callable[[str], str] | None:
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
    if key in _NAME_KEYS:
        return hash_name
    named = _NAME_WORDS & set(words) or "name" in words or words == ["contact", "person"]
    if named and _joined(key) - _NAME_WORDS - {"name"} <= _PERSON_WORDS:  # no product_name
        return hash_name
    return None


def _joined(key: str) -> set[str]:
    """The words of `key` (as `dimension_key` spells it), numbers and a joining word
    between two others (the "de" of `nom_de_famille`) left out."""
    words = [w for w in key.split("_") if w and not w.isdigit()]
    last = len(words) - 1
    return {w for i, w in enumerate(words) if not (w in _JOINING and 0 < i < last)}


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


# A URL's query (or fragment) parameter: `?first_name=Jane&utm_source=mail`. A value ends
# at a "?" too, so the parameters of a URL nested in another's are read as well.
_QUERY_PARAMETER = re.compile(r"[?&;#]([^=&#?;\s\"\\]{1,64})=([^&#;?\s\"\\]*)")
# Words that name a person only with another (`?name=blue-shoes` is a product filter).
_ON_ITS_OWN = {"name", "nom", "nome", "nombre", "ime", "isim", "imie", "fn", "ln", "m", "f", "l"}
_ON_ITS_OWN |= {"namn", "naam"}
# In a URL, whose name a `name` is: a person's (`customer_name`), not a shop's
# (`client_name`, `sender_name`, `display_name` name businesses and campaigns there);
# and the words forms nest fields in (`checkout[billing_address][first_name]`).
_URL_PERSON_WORDS = {"first", "last", "full", "given", "family", "sur", "middle", "maiden"}
_URL_PERSON_WORDS |= {"customer", "cust", "user", "buyer", "member", "billing", "shipping"}
_URL_PERSON_WORDS |= {"bill", "ship", "person", "recipient", "cardholder", "payer", "your"}
_URL_PERSON_WORDS |= {"patient", "passenger", "traveler", "traveller", "attendee", "contact"}
_URL_PERSON_WORDS |= {"applicant", "student", "employee", "f", "l", "m"}
_URL_PERSON_WORDS |= {"completo", "completa", "complet", "vollstandiger", "полное", "famille"}
_URL_PERSON_WORDS |= {"paterno", "materno"}  # `nombre_completo=`, `nom_de_famille=`
_URL_CONTAINER_WORDS = {"checkout", "address", "order", "form", "data", "fields", "details"}
# Every word also as `dimension_key` spells it (Hangul decomposed, `й` read as `и`).
for _words in (_EMAIL_WORDS, _PHONE_WORDS, _NAME_WORDS, _PERSON_WORDS, _ON_ITS_OWN):
    _words |= {dimension_key(w) for w in _words}


# A value that ends in a company's legal form names a business (`bill_to_name=Acme GmbH`).
_COMPANY = re.compile(
    r"\b(?:inc|llc|ltd|limited|gmbh|ag|kg|corp|corporation|holdings|plc|sa|sas|sarl|bv|nv"
    r"|oy|ab|srl|spa|pty|co)\.?$",
    re.IGNORECASE,
)


def names_in_query(text: str) -> Iterator[str]:
    """The query parameters of a URL in `text` (a nested one, percent-escaped, too) named
    for a person's name (`first_name`, `customerName`, `vorname`,
    `checkout[billing_address][first_name]`; not a bare `name`, `name1` or `client_name`)
    whose value is not empty or a digest: a name there would reach Redis and the platform
    raw. Emails and phone numbers are found by value, whatever the parameter is called."""
    text = unreferenced(text)  # `first_name&#61;Jane`
    sources = (text, unquote(text)) if "%" in text else (text,)
    for source in sources:
        for match in _QUERY_PARAMETER.finditer(source):
            if _names_a_person(match[1]):
                value = unquote_plus(match[2]).strip()
                if value and not is_sha256(value) and not _COMPANY.search(value):
                    yield match[1]


@functools.lru_cache(maxsize=4096)  # parameter names repeat from event to event
def _names_a_person(parameter: str) -> bool:
    key = dimension_key(unquote_plus(parameter))
    if key in _NAME_KEYS:
        return True
    words = _joined(key)
    rest = words - _NAME_WORDS - {"name"}
    named = bool(words & _NAME_WORDS - _ON_ITS_OWN) or (
        bool(words & (_ON_ITS_OWN & _NAME_WORDS | {"name"})) and rest & _URL_PERSON_WORDS
    )
    return bool(named) and rest <= _URL_PERSON_WORDS | _URL_CONTAINER_WORDS
