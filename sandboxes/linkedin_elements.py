"""What the LinkedIn sandbox checks in what it is sent (pure functions, no state).

- The elements of a `POST /rest/conversionEvents` call: schema errors are worded as rest.li
  words them (422, grouped per element); semantic issues as "Validation failed because [...]"
  (400). One invalid element fails the whole call.
- Conversion rules, created whole or changed by a rest.li `PARTIAL_UPDATE` patch.
- `campaignConversions` keys in rest.li 2.0 form, in a path, an `ids=List(...)` or a body.
- Refresh requests at the OAuth token endpoint.

Wording that neither the seed nor PLATFORMS.md quotes is ours unless said otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

from sandboxes.base import Json

Answer = tuple[int, Json] | None

FUTURE_SKEW_MS = 5 * 60_000
WINDOW_MS = 90 * 86_400_000


def linkedin_error(status: int, message: str, code: str = "", service_code: int = 0) -> Json:
    """LinkedIn's error body: `{"status", "message"}`, with `code` and `serviceErrorCode` if set."""
    body: Json = {"status": status, "message": message}
    body.update({"code": code} if code else {})
    body.update({"serviceErrorCode": service_code} if service_code else {})
    return body


def not_a(path: str, value: object, kind: str) -> str:
    """A rest.li schema error: the value at `path` is not of type `kind`."""
    return f"{path} :: {json.dumps(value)[:80]} is not backed by a {kind}"


REQUIRED = "field is required but not found and has no default value"
_DELETED_RULE = linkedin_error(
    400,
    "Invalid Conversion information provided, this event(s) is associated to a conversion "
    "that is marked as deleted. Conversion enabled should be true",
)
_UNKNOWN = "unrecognized field found but not allowed"  # rest.li's wording


def _issue(field: str, kind: str, message: str) -> str:
    """One entry of "Validation failed because [...]", with `%d` for the batch index."""
    return f"{{field={field}, batchIndex=%d, type={kind}, message={message}}}"


_UNIDENTIFIED = _issue(
    "Multiple fields issue",
    "INVALID_USER_IDENTIFICATION_FIELD_VALUE",
    "The request must contain one of these fields: SHA256_EMAIL or "
    "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID or ACXIOM_ID or ORACLE_MOAT_ID or (firstName and "
    "lastName),and the input should not be empty string",
)
_TOO_OLD = _issue(
    "Invalid Conversion time",
    "INVALID_CONVERSION_TIME_FIELD_VALUE",
    "Conversion time should be within 90 days.",
)
# The seed quotes only the two issues above; the wording of these is ours.
_FUTURE = _issue(
    "Invalid Conversion time",
    "INVALID_CONVERSION_TIME_FIELD_VALUE",
    "Conversion time should not be in the future.",
)
_BAD_URN = _issue(
    "Invalid Conversion",
    "INVALID_CONVERSION_FIELD_VALUE",
    "conversion must be a URN of the form urn:lla:llaPartnerConversion:<id>",
)
_BAD_HASH = _issue(
    "Invalid SHA256_EMAIL",
    "INVALID_USER_IDENTIFICATION_FIELD_VALUE",
    "SHA256_EMAIL must be a SHA256 hash in 64 lowercase hex characters",
)
_BAD_VALUE = _issue(
    "Invalid Conversion value",
    "INVALID_CONVERSION_VALUE_FIELD_VALUE",
    "currencyCode must be 3 uppercase letters and amount a decimal string",
)
_EXTERNAL_IDS = _issue(
    "Invalid externalIds",
    "INVALID_EXTERNAL_IDS_FIELD_VALUE",
    "The maximum supported size of externalIds is 1",
)

_CONVERSION = re.compile(r"urn:lla:llaPartnerConversion:\d+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"\d+(\.\d+)?")
_ID_TYPES = frozenset(
    {"SHA256_EMAIL", "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "ACXIOM_ID", "ORACLE_MOAT_ID"}
)
_TOP = frozenset({"conversion", "conversionHappenedAt", "conversionValue", "eventId", "user"})
_USER = frozenset({"userIds", "userInfo", "lead", "externalIds"})
_USER_ID = frozenset({"idType", "idValue"})
_USER_INFO_FIELDS = ("firstName", "lastName", "companyName", "title", "countryCode")
_USER_INFO = frozenset(_USER_INFO_FIELDS)
_VALUE = frozenset({"currencyCode", "amount"})


def _fields(
    obj: Json, path: str, allowed: frozenset[str], required: tuple[str, ...], errors: list[str]
) -> None:
    """Add schema errors for unknown and missing fields, as rest.li words them."""
    if not obj.keys() <= allowed:
        errors += [f"{path}/{key} :: {_UNKNOWN}" for key in sorted(obj.keys() - allowed)]
    for key in required:
        if obj.get(key) is None:
            errors.append(f"{path}/{key} :: {REQUIRED}")


def _strings(obj: Json, path: str, names: Iterable[str], errors: list[str]) -> None:
    for name in names:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            errors.append(not_a(f"{path}/{name}", value, "String"))


def _check_user(user: Json, errors: list[str], issues: list[str]) -> None:
    _fields(user, "/user", _USER, ("userIds",), errors)
    _strings(user, "/user", ("lead",), errors)
    identified = empty = False
    ids = user.get("userIds")
    if ids is not None and not isinstance(ids, list):
        errors.append(not_a("/user/userIds", ids, "DataList"))
    for j, uid in enumerate(ids if isinstance(ids, list) else []):
        path = f"/user/userIds/{j}"
        if not isinstance(uid, dict):
            errors.append(not_a(path, uid, "DataMap"))
            continue
        _fields(uid, path, _USER_ID, ("idType", "idValue"), errors)
        _strings(uid, path, ("idType", "idValue"), errors)
        id_type, value = uid.get("idType"), uid.get("idValue")
        if isinstance(id_type, str) and id_type not in _ID_TYPES:
            errors.append(f"{path}/idType :: {json.dumps(id_type)} is not an enum symbol")
        elif isinstance(id_type, str) and isinstance(value, str):
            if not value.strip():
                empty = True
            elif id_type == "SHA256_EMAIL" and not _SHA256.fullmatch(value):
                issues.append(_BAD_HASH)
            else:
                identified = True
    info = user.get("userInfo")
    if isinstance(info, dict):
        _fields(info, "/user/userInfo", _USER_INFO, ("firstName", "lastName"), errors)
        _strings(info, "/user/userInfo", _USER_INFO_FIELDS, errors)
        first, last = info.get("firstName"), info.get("lastName")
        if isinstance(first, str) and isinstance(last, str):
            named = bool(first.strip() and last.strip())
            identified, empty = identified or named, empty or not named
    elif info is not None:
        errors.append(not_a("/user/userInfo", info, "DataMap"))
    external = user.get("externalIds")
    if external is not None and not (
        isinstance(external, list) and all(isinstance(x, str) for x in external)
    ):
        errors.append(not_a("/user/externalIds", external, "DataList of strings"))
    elif external is not None and len(external) > 1:
        issues.append(_EXTERNAL_IDS)
    elif external and external[0].strip():
        identified = True  # the seed allows empty userIds next to externalIds
    if empty or not identified:
        issues.append(_UNIDENTIFIED)


def _check(event: object, now_ms: int) -> tuple[list[str], list[str]]:
    """One element's schema errors ("/path :: message") and semantic issues."""
    if not isinstance(event, dict):
        return [not_a("/", event, "DataMap")], []
    errors: list[str] = []
    _fields(event, "", _TOP, ("conversion", "conversionHappenedAt", "user"), errors)
    _strings(event, "", ("conversion", "eventId"), errors)
    issues: list[str] = []
    conversion, at_ms = event.get("conversion"), event.get("conversionHappenedAt")
    if isinstance(conversion, str) and not _CONVERSION.fullmatch(conversion):
        issues.append(_BAD_URN)
    if at_ms is not None and (not isinstance(at_ms, int) or isinstance(at_ms, bool)):
        errors.append(not_a("/conversionHappenedAt", at_ms, "Long"))
    elif at_ms is not None and at_ms > now_ms + FUTURE_SKEW_MS:
        issues.append(_FUTURE)
    elif at_ms is not None and at_ms < now_ms - WINDOW_MS:
        issues.append(_TOO_OLD)
    value = event.get("conversionValue")
    if isinstance(value, dict):
        _fields(value, "/conversionValue", _VALUE, ("currencyCode", "amount"), errors)
        _strings(value, "/conversionValue", ("currencyCode", "amount"), errors)
        currency, amount = value.get("currencyCode"), value.get("amount")
        bad_currency = isinstance(currency, str) and not _CURRENCY.fullmatch(currency)
        if bad_currency or (isinstance(amount, str) and not _AMOUNT.fullmatch(amount)):
            issues.append(_BAD_VALUE)
    elif value is not None:
        errors.append(not_a("/conversionValue", value, "DataMap"))
    user = event.get("user")
    if isinstance(user, dict):
        _check_user(user, errors, issues)
    elif user is not None:
        errors.append(not_a("/user", user, "DataMap"))
    return errors, issues


def validate(elements: list[Any], batch: bool, now_ms: int, disabled: frozenset[str]) -> Answer:
    """LinkedIn's answer to events with any invalid element, or None if all are valid.

    Args:
        elements: The parsed events, in request order.
        batch: Whether they came as a `BATCH_CREATE` (error groups then name the index).
        now_ms: The present, in epoch milliseconds.
        disabled: URNs of conversion rules that are switched off.

    Returns:
        (status, body) for the whole call, or None.
    """
    groups: list[str] = []
    issues: list[str] = []
    deleted = False
    for index, element in enumerate(elements):
        errors, problems = _check(element, now_ms)
        if errors:
            prefix = f"Index: {index}, " if batch else ""
            groups.append(prefix + "".join(f"ERROR :: {error}\n" for error in errors))
        issues += [problem % index for problem in problems]
        conversion = element.get("conversion") if isinstance(element, dict) else None
        deleted = deleted or (isinstance(conversion, str) and conversion in disabled)
    if groups:
        return 422, {"message": "".join(groups), "status": 422}
    if issues:
        return 400, {"message": f"Validation failed because [{', '.join(issues)}]", "status": 400}
    return (400, _DELETED_RULE) if deleted else None


# -- conversion rules ----------------------------------------------------------------------

_ACCOUNT = re.compile(r"urn:li:sponsoredAccount:\d+")
_RULE_TYPE = re.compile(r"[A-Z][A-Z_]*")  # the seed's list of types is cut off: any enum name
_WINDOW_DAYS = (1, 7, 30, 90)
ATTRIBUTION = ("LAST_TOUCH_BY_CAMPAIGN", "LAST_TOUCH_BY_CONVERSION")
RULE_DEFAULTS: Json = {
    "enabled": True,
    "attributionType": ATTRIBUTION[0],
    "postClickAttributionWindowSize": 30,
    "viewThroughAttributionWindowSize": 7,
}
# Which fields a patch may not touch: the seed's response fields, and the ones that place a
# rule (assumed create-only); the messages are rest.li's validator's.
_READ_ONLY = ("id", "created", "lastModified")
_CREATE_ONLY = ("account", "conversionMethod")


def is_account(value: object) -> bool:
    """Whether `value` is a sponsoredAccount URN."""
    return isinstance(value, str) and _ACCOUNT.fullmatch(value) is not None


def rule_problems(rule: Json) -> Answer:
    """LinkedIn's answer to an invalid conversion rule (whole, after any patch), or None."""
    required = ("account", "name", "conversionMethod", "type")
    missing = [key for key in required if rule.get(key) is None]
    if missing:
        message = "".join(f"ERROR :: /{key} :: {REQUIRED}\n" for key in missing)
        return 422, {"message": message, "status": 422}
    name, kind = rule["name"], rule["type"]
    windows = [rule.get(key, days) for key, days in RULE_DEFAULTS.items() if key.endswith("Size")]
    bad = []  # our wording: the seed only says "400 if the request does not pass validation"
    if not is_account(rule["account"]):
        bad.append("account must be urn:li:sponsoredAccount:<id>")
    if not (isinstance(name, str) and name.strip()):
        bad.append("name must not be empty")
    if rule["conversionMethod"] != "CONVERSIONS_API":
        bad.append("conversionMethod must be CONVERSIONS_API")
    if not (isinstance(kind, str) and _RULE_TYPE.fullmatch(kind)):
        bad.append("type must be a conversion type such as LEAD")
    if not all(type(days) is int and days in _WINDOW_DAYS for days in windows):
        bad.append("attribution windows must be 1, 7, 30 or 90 days")
    if rule.get("attributionType", ATTRIBUTION[0]) not in ATTRIBUTION:
        bad.append(f"attributionType must be one of {', '.join(ATTRIBUTION)}")
    if not isinstance(rule.get("enabled", True), bool):
        bad.append("enabled must be true or false")
    return (400, linkedin_error(400, "; ".join(bad))) if bad else None


def patch_problems(body: Json) -> Answer:
    """LinkedIn's answer to a malformed `{"patch": {"$set": {...}}}` body, or None.

    Only `$set` of top-level fields is imitated; the values are checked afterwards, on the
    patched rule, with `rule_problems`.
    """
    patch = body.get("patch")
    if not isinstance(patch, dict):
        problem = f"/patch :: {REQUIRED}" if patch is None else not_a("/patch", patch, "DataMap")
        return 422, {"message": f"ERROR :: {problem}\n", "status": 422}
    if not patch.keys() <= {"$set"}:
        others = ", ".join(sorted(patch.keys() - {"$set"}))
        return 400, linkedin_error(400, f"The sandbox supports only $set in a patch, not {others}")
    changes = patch.get("$set", {})
    if not isinstance(changes, dict):
        problem = not_a("/patch/$set", changes, "DataMap")
        return 422, {"message": f"ERROR :: {problem}\n", "status": 422}
    fixed = [(key, "ReadOnly") for key in _READ_ONLY if key in changes]
    fixed += [(key, "CreateOnly") for key in _CREATE_ONLY if key in changes]
    if fixed:
        message = "".join(
            f"ERROR :: /{key} :: {kind} field present in a partial_update request\n"
            for key, kind in fixed
        )
        return 422, {"message": message, "status": 422}
    return None


# -- campaignConversions keys (rest.li 2.0) ---------------------------------------------------

_CAMPAIGN = re.compile(r"urn:li:sponsoredCampaign:\d+")
_KEY = re.compile(r"\((\w+):([^(),:]*),(\w+):([^(),:]*)\)")  # URNs' own colons are %3A
_IDS = re.compile(r"List\(((?:\([^()]*\))(?:,\([^()]*\))*)\)")
KEY_FORM = "(campaign:<URN>,conversion:<URN>), each URN's colons encoded as %3A"


def association_key(campaign: str, conversion: str) -> str:
    """The rest.li 2.0 key of an association, as in the seed: `(campaign:urn%3Ali...,...)`."""
    return f"(campaign:{quote(campaign, safe='')},conversion:{quote(conversion, safe='')})"


def parse_key(raw: str) -> tuple[str, str] | None:
    """(campaign URN, conversion URN) from a still-encoded key, or None if it is malformed.

    An unencoded colon inside a URN breaks rest.li's parse, and a doubly encoded one leaves
    `%3A` in the decoded URN: both are refused, as the seed asks for single encoding.
    """
    match = _KEY.fullmatch(raw)
    if match is None:
        return None
    parts = {match.group(1): unquote(match.group(2)), match.group(3): unquote(match.group(4))}
    campaign, conversion = parts.get("campaign", ""), parts.get("conversion", "")
    if not (_CAMPAIGN.fullmatch(campaign) and _CONVERSION.fullmatch(conversion)):
        return None
    return campaign, conversion


def parse_ids(raw_query: str) -> list[tuple[str, str]] | None:
    """The keys of `ids=List(...)` in a still-encoded query string, or None if malformed."""
    values = [arg[4:] for arg in raw_query.split("&") if arg.startswith("ids=")]
    match = _IDS.fullmatch(values[0]) if len(values) == 1 else None
    if match is None:
        return None
    keys = [parse_key(raw) for raw in re.findall(r"\([^()]*\)", match.group(1))]
    return None if None in keys else [key for key in keys if key is not None]


def entity_problem(entity: Json, pair: tuple[str, str]) -> Json | None:
    """Why an association body does not fit its key (our wording), or None."""
    named = (entity.get("campaign", pair[0]), entity.get("conversion", pair[1]))
    if named == pair:
        return None
    return linkedin_error(400, "The body must name the campaign and conversion of the key")


def batch_associations(
    pairs: list[tuple[str, str]], body: Json
) -> tuple[tuple[int, Json], list[tuple[str, str]]]:
    """A rest.li BATCH_UPDATE of associations: its answer, and the pairs to record.

    Args:
        pairs: The keys of `ids=List(...)`, parsed.
        body: The request body, `{"entities": {key: {"campaign", "conversion"}}}`.
    """
    entities = body.get("entities")
    if not isinstance(entities, dict):
        where = f"/entities :: {REQUIRED}"
        if entities is not None:
            where = not_a("/entities", entities, "DataMap")
        return (422, {"message": f"ERROR :: {where}\n", "status": 422}), []
    keys = {association_key(*pair): pair for pair in pairs}
    if entities.keys() != keys.keys():  # rest.li compares the canonical encodings
        message = (
            f"Batch request mismatch, URI keys: '[{', '.join(keys)}]'  "
            f"Entity keys: '[{', '.join(entities)}]'"
        )
        return (400, linkedin_error(400, message)), []
    results: dict[str, Json] = {}
    errors: dict[str, Json] = {}
    for key, pair in keys.items():
        entity = entities[key]
        problem = (
            entity_problem(entity, pair)
            if isinstance(entity, dict)
            else linkedin_error(400, "The entity must be a JSON object")  # our wording
        )
        if problem is None:
            results[key] = {"status": 204}
        else:
            errors[key] = problem
    accepted = [keys[key] for key in results]
    return (200, {"results": results, "errors": errors}), accepted
