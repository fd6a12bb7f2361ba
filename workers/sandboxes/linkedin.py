"""A local LinkedIn Conversions API (seed 003; observed behaviour in PLATFORMS.md).

Routes: `POST /rest/conversionEvents` (one event, or `BATCH_CREATE` of up to 5000),
`POST`/`GET /rest/conversions` (conversion rules) and `PUT /rest/campaignConversions/(...)`.
One invalid element fails the whole batch and nothing of it is recorded, as on LinkedIn.
Wording that neither the seed nor PLATFORMS.md quotes is ours and is marked as such.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any, cast

import tornado.web

from workers.sandboxes.base import REVOKED_TOKEN, Json, PlatformHandler, Sandbox, application

BATCH_LIMIT = 5000
RATE_LIMIT = 300  # calls per member token per minute (seed); other sources say 600
FUTURE_SKEW_MS = 5 * 60_000
WINDOW_MS = 90 * 86_400_000
OLDEST_VERSION = "202312"  # the seed: 202311 and older are sunset, except 202306 and 202307
FIRST_RULE_ID = 100_001

Answer = tuple[int, Json] | None


def _error(status: int, message: str, code: str = "", service_code: int = 0) -> Json:
    body: Json = {"status": status, "message": message}
    body.update({"code": code} if code else {})
    body.update({"serviceErrorCode": service_code} if service_code else {})
    return body


_ERRORS: dict[tuple[int, str], Json] = {
    (401, ""): _error(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65600),
    (401, REVOKED_TOKEN): _error(
        401,
        "The token used in the request has been revoked by the user",
        *("REVOKED_ACCESS_TOKEN", 65601),
    ),
    (403, ""): _error(
        403,
        "Not enough permissions to access: partnerConversionEvents.BATCH_CREATE",
        *("ACCESS_DENIED", 100),
    ),
    (429, ""): _error(
        429,
        "Resource level throttle limit for calls to this resource is reached.",
        "TOO_MANY_REQUESTS",
    ),
    (500, ""): _error(500, "Internal Server Error"),
    (503, ""): _error(503, "Service Unavailable"),
}
_VERSION_MISSING = _error(
    400,
    "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
    "VERSION_MISSING",
)
_DELETED_RULE = _error(
    400,
    "Invalid Conversion information provided, this event(s) is associated to a conversion "
    "that is marked as deleted. Conversion enabled should be true",
)
_REQUIRED = "field is required but not found and has no default value"
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

_VERSION = re.compile(r"\d{6}")
_STILL_ACTIVE = frozenset({"202306", "202307"})
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

_ACCOUNT = re.compile(r"urn:li:sponsoredAccount:\d+")
_ASSOCIATION = re.compile(
    r"\(campaign:(urn:li:sponsoredCampaign:\d+),conversion:(urn:lla:llaPartnerConversion:\d+)\)"
)
_RULE_TYPE = re.compile(r"[A-Z][A-Z_]*")  # the seed's list of types is cut off: any enum name
_WINDOW_FIELDS = ("postClickAttributionWindowSize", "viewThroughAttributionWindowSize")
_WINDOW_DAYS = (1, 7, 30, 90)
_ATTRIBUTION = ("LAST_TOUCH_BY_CAMPAIGN", "LAST_TOUCH_BY_CONVERSION")
_AUTO_ASSOCIATION = (None, "ALL_CAMPAIGNS", "OBJECTIVE_BASED")


def _not_a(path: str, value: object, kind: str) -> str:
    return f"{path} :: {json.dumps(value)[:80]} is not backed by a {kind}"


def _fields(
    obj: Json, path: str, allowed: frozenset[str], required: tuple[str, ...], errors: list[str]
) -> None:
    """Add schema errors for unknown and missing fields, as rest.li words them."""
    if not obj.keys() <= allowed:
        errors += [f"{path}/{key} :: {_UNKNOWN}" for key in sorted(obj.keys() - allowed)]
    for key in required:
        if obj.get(key) is None:
            errors.append(f"{path}/{key} :: {_REQUIRED}")


def _strings(obj: Json, path: str, names: Iterable[str], errors: list[str]) -> None:
    for name in names:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            errors.append(_not_a(f"{path}/{name}", value, "String"))


def _check_user(user: Json, errors: list[str], issues: list[str]) -> None:
    _fields(user, "/user", _USER, ("userIds",), errors)
    _strings(user, "/user", ("lead",), errors)
    identified = empty = False
    ids = user.get("userIds")
    if ids is not None and not isinstance(ids, list):
        errors.append(_not_a("/user/userIds", ids, "DataList"))
    for j, uid in enumerate(ids if isinstance(ids, list) else []):
        path = f"/user/userIds/{j}"
        if not isinstance(uid, dict):
            errors.append(_not_a(path, uid, "DataMap"))
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
        errors.append(_not_a("/user/userInfo", info, "DataMap"))
    external = user.get("externalIds")
    if external is not None and not (
        isinstance(external, list) and all(isinstance(x, str) for x in external)
    ):
        errors.append(_not_a("/user/externalIds", external, "DataList of strings"))
    elif external is not None and len(external) > 1:
        issues.append(_EXTERNAL_IDS)
    elif external and external[0].strip():
        identified = True  # the seed allows empty userIds next to externalIds
    if empty or not identified:
        issues.append(_UNIDENTIFIED)


def _check(event: object, now_ms: int) -> tuple[list[str], list[str]]:
    """One element's schema errors ("/path :: message") and semantic issues."""
    if not isinstance(event, dict):
        return [_not_a("/", event, "DataMap")], []
    errors: list[str] = []
    _fields(event, "", _TOP, ("conversion", "conversionHappenedAt", "user"), errors)
    _strings(event, "", ("conversion", "eventId"), errors)
    issues: list[str] = []
    conversion, at_ms = event.get("conversion"), event.get("conversionHappenedAt")
    if isinstance(conversion, str) and not _CONVERSION.fullmatch(conversion):
        issues.append(_BAD_URN)
    if at_ms is not None and (not isinstance(at_ms, int) or isinstance(at_ms, bool)):
        errors.append(_not_a("/conversionHappenedAt", at_ms, "Long"))
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
        errors.append(_not_a("/conversionValue", value, "DataMap"))
    user = event.get("user")
    if isinstance(user, dict):
        _check_user(user, errors, issues)
    elif user is not None:
        errors.append(_not_a("/user", user, "DataMap"))
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


def _rule_problems(rule: Json) -> Answer:
    required = ("account", "name", "conversionMethod", "type")
    missing = [key for key in required if rule.get(key) is None]
    if missing:
        message = "".join(f"ERROR :: /{key} :: {_REQUIRED}\n" for key in missing)
        return 422, {"message": message, "status": 422}
    account, name, kind = rule["account"], rule["name"], rule["type"]
    windows = [rule.get(key, 30) for key in _WINDOW_FIELDS]
    bad = []  # our wording: the seed only says "400 if the request does not pass validation"
    if not (isinstance(account, str) and _ACCOUNT.fullmatch(account)):
        bad.append("account must be urn:li:sponsoredAccount:<id>")
    if not (isinstance(name, str) and name.strip()):
        bad.append("name must not be empty")
    if rule["conversionMethod"] != "CONVERSIONS_API":
        bad.append("conversionMethod must be CONVERSIONS_API")
    if not (isinstance(kind, str) and _RULE_TYPE.fullmatch(kind)):
        bad.append("type must be a conversion type such as LEAD")
    if not all(type(days) is int and days in _WINDOW_DAYS for days in windows):
        bad.append("attribution windows must be 1, 7, 30 or 90 days")
    if rule.get("attributionType", _ATTRIBUTION[0]) not in _ATTRIBUTION:
        bad.append(f"attributionType must be one of {', '.join(_ATTRIBUTION)}")
    if not isinstance(rule.get("enabled", True), bool):
        bad.append("enabled must be true or false")
    return (400, _error(400, "; ".join(bad))) if bad else None


class ConversionRules:
    """Conversion rules and campaign associations created through the sandbox."""

    def __init__(self) -> None:
        self.rules: dict[int, Json] = {}
        self.auto_association: dict[int, str] = {}  # rule id -> autoAssociationType
        self.associations: set[tuple[str, str]] = set()  # (campaign URN, conversion URN)

    def clear(self) -> None:
        """Forget every rule and association."""
        self.rules.clear()
        self.auto_association.clear()
        self.associations.clear()

    def add(self, fields: Json, now_ms: int, auto_association: str | None) -> int:
        """Store a validated rule with LinkedIn's defaults; returns its new id."""
        rule_id = FIRST_RULE_ID + len(self.rules)
        defaults = {"enabled": True, "attributionType": _ATTRIBUTION[0]}
        windows = {"postClickAttributionWindowSize": 30, "viewThroughAttributionWindowSize": 7}
        stamps = {"id": rule_id, "created": now_ms, "lastModified": now_ms}
        self.rules[rule_id] = {**defaults, **windows, **fields, **stamps}
        if auto_association:
            self.auto_association[rule_id] = auto_association
        return rule_id

    def disabled(self) -> frozenset[str]:
        """URNs of rules created with `enabled: false`.

        Events naming unknown rule ids are accepted: rules made in Campaign Manager or by other
        apps are invisible here, so only LinkedIn itself could refuse them.
        """
        ids = [rule_id for rule_id, rule in self.rules.items() if rule.get("enabled") is False]
        return frozenset(f"urn:lla:llaPartnerConversion:{rule_id}" for rule_id in ids)


class _LinkedIn(PlatformHandler):
    id_field = "eventId"

    @property
    def rules(self) -> ConversionRules:
        return cast(ConversionRules, self.settings["linkedin_rules"])

    def error_body(self, status: int, reason: str = "") -> Json:
        found = _ERRORS.get((status, reason)) or _ERRORS.get((status, ""))
        return found or super().error_body(status, reason)

    def check_request(self) -> None:
        headers = self.request.headers
        version = headers.get("LinkedIn-Version", "")
        this_month = time.strftime("%Y%m", time.gmtime(self.sandbox.clock()))
        oldest = self.settings["linkedin_oldest_version"]
        content_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if not version:
            self.answer(400, _VERSION_MISSING)
        elif not _VERSION.fullmatch(version):  # our wording from here on
            self.answer(400, _error(400, f"Invalid LinkedIn-Version {version!r}: use YYYYMM"))
        elif not (oldest <= version <= this_month or version in _STILL_ACTIVE):
            message = f"Requested version {version} is not active"
            self.answer(426, _error(426, message, "NONEXISTENT_VERSION"))
        elif headers.get("X-Restli-Protocol-Version") != "2.0.0":
            self.answer(400, _error(400, "The X-Restli-Protocol-Version header must be 2.0.0"))
        elif self.request.body and content_type != "application/json":
            self.answer(415, _error(415, f"Unsupported Content-Type {content_type!r}"))

    def json_object(self, required: bool = True) -> Json | None:
        """The body as a JSON object, or None after answering LinkedIn's error."""
        if not self.request.body and not required:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            self.answer(400, _error(400, "Cannot parse request entity"))
            return None
        if not isinstance(body, dict):
            self.answer(422, {"message": f"ERROR :: {_not_a('/', body, 'DataMap')}\n"})
            return None
        return body


class _ConversionEvents(_LinkedIn):
    def post(self) -> None:
        method = self.request.headers.get("X-RestLi-Method", "")
        if method not in ("", "BATCH_CREATE"):
            self.answer(400, _error(400, f"Unsupported X-RestLi-Method {method!r}"))
            return
        body, batch = self.json_object(), method == "BATCH_CREATE"
        if body is None:
            return
        elements = body.get("elements") if batch else [body]
        if not isinstance(elements, list):
            self.answer(422, {"message": f"ERROR :: /elements :: {_REQUIRED}\n", "status": 422})
            return
        if not 1 <= len(elements) <= BATCH_LIMIT:
            message = f"The batch size limit is {BATCH_LIMIT}; this request has {len(elements)}."
            self.answer(400, _error(400, message))
            return
        now_ms = int(self.sandbox.clock() * 1000)
        problem = validate(elements, batch, now_ms, self.rules.disabled())
        if problem is not None:
            self.answer(*problem)
            return
        self.sandbox.accept(self.token, self.request, elements, self.id_field)
        if batch:  # built by hand: json.dumps of 5000 tiny dicts is measurable in the benchmark
            self.answer(
                200, b'{"elements":[' + b",".join([b'{"status":201}'] * len(elements)) + b"]}"
            )
        else:
            self.answer(201)


class _Conversions(_LinkedIn):
    def post(self) -> None:
        auto = self.get_query_argument("autoAssociationType", None)
        if auto not in _AUTO_ASSOCIATION:
            self.answer(400, _error(400, f"Invalid autoAssociationType {auto!r}"))
            return
        body = self.json_object()
        problem = None if body is None else _rule_problems(body)
        if problem is not None:
            self.answer(*problem)
        elif body is not None:
            rule_id = self.rules.add(body, int(self.sandbox.clock() * 1000), auto)
            headers = {"x-restli-id": str(rule_id), "Location": f"/rest/conversions/{rule_id}"}
            self.answer(201, {"id": rule_id}, headers)

    def get(self) -> None:
        account = self.get_query_argument("account", "") or ""
        if self.get_query_argument("q", "") != "account" or not _ACCOUNT.fullmatch(account):
            message = "Use ?q=account&account=urn:li:sponsoredAccount:<id>"
            self.answer(400, _error(400, message))
            return
        found = [rule for rule in self.rules.rules.values() if rule["account"] == account]
        paging = {"start": 0, "count": len(found), "links": []}
        self.answer(200, {"elements": found, "paging": paging})


class _CampaignConversions(_LinkedIn):
    def put(self, key: str) -> None:
        match = _ASSOCIATION.fullmatch(key)  # tornado has already percent-decoded the key
        if match is None:
            self.answer(400, _error(400, f"Invalid campaignConversions key {key!r}"))
            return
        pair = {"campaign": match.group(1), "conversion": match.group(2)}
        body = self.json_object(required=False)
        if body is not None and any(body.get(name, urn) != urn for name, urn in pair.items()):
            self.answer(
                400, _error(400, "The body must name the campaign and conversion of the key")
            )
        elif body is not None:
            self.rules.associations.add((pair["campaign"], pair["conversion"]))
            self.answer(204)


def make_app(
    sandbox: Sandbox | None = None, *, oldest_version: str = OLDEST_VERSION
) -> tornado.web.Application:
    """The LinkedIn sandbox: LinkedIn's routes plus the control API under `/_sandbox/`.

    Args:
        sandbox: Shared state; by default a new one allowing 300 calls per token per minute.
        oldest_version: Oldest `LinkedIn-Version` served (YYYYMM); older ones get 426.

    Returns:
        The tornado application; serve it with `workers.sandboxes.base.serve`.
    """
    if sandbox is None:
        sandbox = Sandbox(rate_limit=RATE_LIMIT, rate_window_s=60.0)
    rules = ConversionRules()
    sandbox.on_reset.append(rules.clear)
    routes = [
        (r"/rest/conversionEvents", _ConversionEvents),
        (r"/rest/conversions", _Conversions),
        (r"/rest/campaignConversions/(.+)", _CampaignConversions),
    ]
    settings = {"linkedin_rules": rules, "linkedin_oldest_version": oldest_version}
    return application(sandbox, routes, **settings)
