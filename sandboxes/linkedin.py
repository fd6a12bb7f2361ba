"""A local LinkedIn Conversions API (seed 003; observed behaviour in PLATFORMS.md).

Routes: `POST /rest/conversionEvents` (one event, or `BATCH_CREATE` of up to 5000),
`POST`/`GET /rest/conversions` (conversion rules) and `PUT /rest/campaignConversions/(...)`.
One invalid element fails the whole batch and nothing of it is recorded, as on LinkedIn
(the element checks are in `linkedin_elements`).
Wording that neither the seed nor PLATFORMS.md quotes is ours and is marked as such.
"""

from __future__ import annotations

import json
import re
import time
from typing import cast

import tornado.web

from sandboxes.base import REVOKED_TOKEN, Json, PlatformHandler, Sandbox, application
from sandboxes.linkedin_elements import REQUIRED, Answer, linkedin_error, not_a, validate

BATCH_LIMIT = 5000
RATE_LIMIT = 300  # calls per member token per minute (seed); other sources say 600
OLDEST_VERSION = "202312"  # the seed: 202311 and older are sunset, except 202306 and 202307
FIRST_RULE_ID = 100_001

_ERRORS: dict[tuple[int, str], Json] = {
    (401, ""): linkedin_error(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65600),
    (401, REVOKED_TOKEN): linkedin_error(
        401,
        "The token used in the request has been revoked by the user",
        *("REVOKED_ACCESS_TOKEN", 65601),
    ),
    (403, ""): linkedin_error(
        403,
        "Not enough permissions to access: partnerConversionEvents.BATCH_CREATE",
        *("ACCESS_DENIED", 100),
    ),
    (429, ""): linkedin_error(
        429,
        "Resource level throttle limit for calls to this resource is reached.",
        "TOO_MANY_REQUESTS",
    ),
    (500, ""): linkedin_error(500, "Internal Server Error"),
    (503, ""): linkedin_error(503, "Service Unavailable"),
}
_VERSION_MISSING = linkedin_error(
    400,
    "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
    "VERSION_MISSING",
)

_VERSION = re.compile(r"\d{6}")
_STILL_ACTIVE = frozenset({"202306", "202307"})
_ACCOUNT = re.compile(r"urn:li:sponsoredAccount:\d+")
_ASSOCIATION = re.compile(
    r"\(campaign:(urn:li:sponsoredCampaign:\d+),conversion:(urn:lla:llaPartnerConversion:\d+)\)"
)
_RULE_TYPE = re.compile(r"[A-Z][A-Z_]*")  # the seed's list of types is cut off: any enum name
_WINDOW_FIELDS = ("postClickAttributionWindowSize", "viewThroughAttributionWindowSize")
_WINDOW_DAYS = (1, 7, 30, 90)
_ATTRIBUTION = ("LAST_TOUCH_BY_CAMPAIGN", "LAST_TOUCH_BY_CONVERSION")
_AUTO_ASSOCIATION = (None, "ALL_CAMPAIGNS", "OBJECTIVE_BASED")


def _rule_problems(rule: Json) -> Answer:
    required = ("account", "name", "conversionMethod", "type")
    missing = [key for key in required if rule.get(key) is None]
    if missing:
        message = "".join(f"ERROR :: /{key} :: {REQUIRED}\n" for key in missing)
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
    return (400, linkedin_error(400, "; ".join(bad))) if bad else None


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
            self.answer(
                400, linkedin_error(400, f"Invalid LinkedIn-Version {version!r}: use YYYYMM")
            )
        elif not (oldest <= version <= this_month or version in _STILL_ACTIVE):
            message = f"Requested version {version} is not active"
            self.answer(426, linkedin_error(426, message, "NONEXISTENT_VERSION"))
        elif headers.get("X-Restli-Protocol-Version") != "2.0.0":
            self.answer(
                400, linkedin_error(400, "The X-Restli-Protocol-Version header must be 2.0.0")
            )
        elif self.request.body and content_type != "application/json":
            self.answer(415, linkedin_error(415, f"Unsupported Content-Type {content_type!r}"))

    def json_object(self, required: bool = True) -> Json | None:
        """The body as a JSON object, or None after answering LinkedIn's error."""
        if not self.request.body and not required:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            self.answer(400, linkedin_error(400, "Cannot parse request entity"))
            return None
        if not isinstance(body, dict):
            self.answer(422, {"message": f"ERROR :: {not_a('/', body, 'DataMap')}\n"})
            return None
        return body


class _ConversionEvents(_LinkedIn):
    def post(self) -> None:
        method = self.request.headers.get("X-RestLi-Method", "")
        if method not in ("", "BATCH_CREATE"):
            self.answer(400, linkedin_error(400, f"Unsupported X-RestLi-Method {method!r}"))
            return
        body, batch = self.json_object(), method == "BATCH_CREATE"
        if body is None:
            return
        elements = body.get("elements") if batch else [body]
        if not isinstance(elements, list):
            self.answer(422, {"message": f"ERROR :: /elements :: {REQUIRED}\n", "status": 422})
            return
        if not 1 <= len(elements) <= BATCH_LIMIT:
            message = f"The batch size limit is {BATCH_LIMIT}; this request has {len(elements)}."
            self.answer(400, linkedin_error(400, message))
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
            self.answer(400, linkedin_error(400, f"Invalid autoAssociationType {auto!r}"))
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
            self.answer(400, linkedin_error(400, message))
            return
        found = [rule for rule in self.rules.rules.values() if rule["account"] == account]
        paging = {"start": 0, "count": len(found), "links": []}
        self.answer(200, {"elements": found, "paging": paging})


class _CampaignConversions(_LinkedIn):
    def put(self, key: str) -> None:
        match = _ASSOCIATION.fullmatch(key)  # tornado has already percent-decoded the key
        if match is None:
            self.answer(400, linkedin_error(400, f"Invalid campaignConversions key {key!r}"))
            return
        pair = {"campaign": match.group(1), "conversion": match.group(2)}
        body = self.json_object(required=False)
        if body is not None and any(body.get(name, urn) != urn for name, urn in pair.items()):
            self.answer(
                400,
                linkedin_error(400, "The body must name the campaign and conversion of the key"),
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
        The tornado application; serve it with `sandboxes.base.serve`.
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
