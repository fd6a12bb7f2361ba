"""A local LinkedIn Conversions API (seed 003; observed behaviour in PLATFORMS.md).

LinkedIn's routes (api.linkedin.com; every one needs `LinkedIn-Version: YYYYMM` and
`X-Restli-Protocol-Version: 2.0.0`, and a bearer token that is not revoked or expired):

- `POST /rest/conversionEvents`: one event (201), or `X-RestLi-Method: BATCH_CREATE` of up to
  5000 (200, `{"elements": [{"status": 201}, ...]}`). One invalid element fails the whole batch
  and nothing of it is recorded, as on LinkedIn (the checks are in `linkedin_elements`).
- `POST /rest/conversions[?autoAssociationType=ALL_CAMPAIGNS|OBJECTIVE_BASED]`: create a rule
  (201, `{"id"}` and `x-restli-id`); `GET /rest/conversions?q=account&account=<urn>
  [&start=0&count=10]`: the account's rules, `{"elements", "paging": {start, count, total}}`.
- `GET /rest/conversions/{id}`: one rule; `POST /rest/conversions/{id}` with
  `X-RestLi-Method: PARTIAL_UPDATE` and `{"patch": {"$set": {...}}}`: change it (204).
- `PUT /rest/campaignConversions/(campaign:<urn>,conversion:<urn>)`: associate (204);
  `PUT /rest/campaignConversions?ids=List((...),(...))` with `{"entities": {key: {...}}}`: a
  rest.li BATCH_UPDATE (200, `{"results": {key: {"status": 204}}, "errors": {key: ...}}`).
  URNs inside keys are percent-encoded (`urn%3Ali%3AsponsoredCampaign%3A1`), as in the seed.

LinkedIn's token endpoint (www.linkedin.com, no version header): `POST /oauth/v2/accessToken`
with the form `grant_type=refresh_token&refresh_token&client_id&client_secret` answers
`{"access_token", "expires_in", "refresh_token", "refresh_token_expires_in", "scope"}`; the
refresh token is neither rotated nor extended. An access token it issued expires on the
sandbox clock; other tokens are accepted as before, unless listed in `expired_tokens`.

Config fields beyond the shared ones (`POST /_sandbox/config`, reset to defaults by
`/_sandbox/reset`): `oauth_client_id`, `oauth_client_secret`, `oauth_refresh_token` (unset:
every refresh is refused), `access_token_ttl_s` (default 5184000, 60 days),
`refresh_token_ttl_s` (default 31536000, 365 days, counted from when `oauth_refresh_token` was
last configured), `oauth_fail` (an HTTP status the token endpoint answers while set) and
`expired_tokens`. Control API additions: `GET /_sandbox/oauth` (`{"refreshes", "refused"}`)
and `GET /_sandbox/linkedin/associations`. The token endpoint takes no injected faults or
latency and is not in `/_sandbox/calls`.
Wording that neither the seed nor PLATFORMS.md quotes is ours and is marked as such.
"""

from __future__ import annotations

import json
import re
import time
from typing import cast

import tornado.web

from sandboxes.base import (
    REVOKED_TOKEN,
    Json,
    JsonHandler,
    PlatformHandler,
    Sandbox,
    application,
)
from sandboxes.linkedin_elements import (
    KEY_FORM,
    REQUIRED,
    RULE_DEFAULTS,
    Answer,
    batch_associations,
    entity_problem,
    is_account,
    linkedin_error,
    not_a,
    parse_ids,
    parse_key,
    patch_problems,
    rule_problems,
    validate,
)
from sandboxes.linkedin_oauth import OAUTH_CONFIG, AccessToken, OAuthGrants, OAuthTallies

BATCH_LIMIT = 5000
RATE_LIMIT = 300  # calls per member token per minute (seed); other sources say 600
OLDEST_VERSION = "202312"  # the seed: 202311 and older are sunset, except 202306 and 202307
FIRST_RULE_ID = 100_001
DEFAULT_COUNT = 10  # rest.li's page size when a finder call gives no `count`

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
_EXPIRED = linkedin_error(  # our wording: no source quotes LinkedIn's expired-token answer
    401, "The token used in the request has expired", "EXPIRED_ACCESS_TOKEN", 65602
)
_VERSION_MISSING = linkedin_error(
    400,
    "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
    "VERSION_MISSING",
)

_VERSION = re.compile(r"\d{6}")
_STILL_ACTIVE = frozenset({"202306", "202307"})
_AUTO_ASSOCIATION = (None, "ALL_CAMPAIGNS", "OBJECTIVE_BASED")
_PAGE_ARG = re.compile(r"[0-9]{1,9}")
_ASSOCIATIONS_PATH = "/rest/campaignConversions/"


class ConversionRules:
    """Conversion rules and campaign associations created through the sandbox."""

    def __init__(self) -> None:
        self.rules: dict[int, Json] = {}
        self.auto_association: dict[int, str] = {}  # rule id -> autoAssociationType
        self.associations: dict[tuple[str, str], None] = {}  # (campaign, conversion), in order

    def clear(self) -> None:
        """Forget every rule and association."""
        self.rules.clear()
        self.auto_association.clear()
        self.associations.clear()

    def add(self, fields: Json, now_ms: int, auto_association: str | None) -> int:
        """Store a validated rule with LinkedIn's defaults; returns its new id."""
        rule_id = FIRST_RULE_ID + len(self.rules)
        stamps = {"id": rule_id, "created": now_ms, "lastModified": now_ms}
        self.rules[rule_id] = {**RULE_DEFAULTS, **fields, **stamps}
        if auto_association:
            self.auto_association[rule_id] = auto_association
        return rule_id

    def update(self, rule_id: int, changes: Json, now_ms: int) -> Answer:
        """Apply a patch's `$set` if the changed rule is valid; else LinkedIn's refusal."""
        changed = {**self.rules[rule_id], **changes, "lastModified": now_ms}
        problem = rule_problems(changed)
        if problem is None:
            self.rules[rule_id] = changed
        return problem

    def associate(self, campaign: str, conversion: str) -> None:
        """Record an association (again is harmless, as a rest.li UPDATE is)."""
        self.associations[(campaign, conversion)] = None

    def disabled(self) -> frozenset[str]:
        """URNs of rules that are switched off (`enabled: false`).

        Events naming unknown rule ids are accepted: rules made in Campaign Manager or by other
        apps are invisible here, so only LinkedIn itself could refuse them.
        """
        ids = [rule_id for rule_id, rule in self.rules.items() if rule.get("enabled") is False]
        return frozenset(f"urn:lla:llaPartnerConversion:{rule_id}" for rule_id in ids)

    def to_json(self) -> Json:
        """The associations and automatic association types, as the control API shows them."""
        pairs = [{"campaign": c, "conversion": v} for c, v in self.associations]
        auto = {str(rule_id): kind for rule_id, kind in self.auto_association.items()}
        return {"associations": pairs, "auto_association": auto}


class _LinkedIn(PlatformHandler):
    id_field = "eventId"

    @property
    def rules(self) -> ConversionRules:
        return cast(ConversionRules, self.settings["linkedin_rules"])

    def error_body(self, status: int, reason: str = "") -> Json:
        found = _ERRORS.get((status, reason)) or _ERRORS.get((status, ""))
        return found or super().error_body(status, reason)

    def check_target(self) -> tuple[int, Json] | None:
        # Not the target but the token: here because it comes after the revoked check and
        # before throttling, as LinkedIn's own authentication does.
        grants = cast(OAuthGrants, self.settings["linkedin_oauth"])
        return (401, _EXPIRED) if grants.expired(self.token) else None

    def check_request(self) -> None:
        headers = self.request.headers
        version = headers.get("LinkedIn-Version", "")
        now = time.gmtime(self.sandbox.clock())
        this_month = time.strftime("%Y%m", now)
        # LinkedIn sunsets a version about a year after its release (PLATFORMS.md)
        oldest = max(self.settings["linkedin_oldest_version"], f"{now.tm_year - 1}{now.tm_mon:02}")
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

    def restli_method(self, *allowed: str) -> bool:
        """Whether X-RestLi-Method is one of `allowed` ("" for absent); else answers 400."""
        method = self.request.headers.get("X-RestLi-Method", "")
        if method not in allowed:  # our wording
            wanted = " or ".join(name or "none" for name in allowed)
            message = f"Unsupported X-RestLi-Method {method!r} here: use {wanted}"
            self.answer(400, linkedin_error(400, message))
        return method in allowed

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

    def page(self) -> tuple[int, int] | None:
        """rest.li's `start` and `count`, or None after answering 400."""
        bounds = []
        for name, default in (("start", 0), ("count", DEFAULT_COUNT)):
            raw = self.get_query_argument(name, str(default)) or ""
            if not _PAGE_ARG.fullmatch(raw):  # our wording
                self.answer(400, linkedin_error(400, f"{name} must be a non-negative integer"))
                return None
            bounds.append(int(raw))
        return bounds[0], bounds[1]


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
        if not self.restli_method("", "CREATE"):
            return
        auto = self.get_query_argument("autoAssociationType", None)
        if auto not in _AUTO_ASSOCIATION:
            self.answer(400, linkedin_error(400, f"Invalid autoAssociationType {auto!r}"))
            return
        body = self.json_object()
        problem = None if body is None else rule_problems(body)
        if problem is not None:
            self.answer(*problem)
        elif body is not None:
            rule_id = self.rules.add(body, int(self.sandbox.clock() * 1000), auto)
            headers = {"x-restli-id": str(rule_id), "Location": f"/rest/conversions/{rule_id}"}
            self.answer(201, {"id": rule_id}, headers)

    def get(self) -> None:
        account = self.get_query_argument("account", "") or ""
        if self.get_query_argument("q", "") != "account" or not is_account(account):
            message = "Use ?q=account&account=urn:li:sponsoredAccount:<id>"
            self.answer(400, linkedin_error(400, message))
            return
        bounds = self.page()
        if bounds is None:
            return
        start, count = bounds
        found = [rule for rule in self.rules.rules.values() if rule["account"] == account]
        paging = {"start": start, "count": count, "total": len(found), "links": []}
        self.answer(200, {"elements": found[start : start + count], "paging": paging})


class _Conversion(_LinkedIn):
    def rule_id(self, key: str) -> int | None:
        """The id of the rule the path names, or None after answering 400 or 404 (our wording)."""
        if not (key.isascii() and key.isdigit()):
            self.answer(400, linkedin_error(400, f"Invalid conversion id {key!r}"))
        elif int(key) not in self.rules.rules:
            self.answer(404, linkedin_error(404, f"Conversion {key} does not exist"))
        else:
            return int(key)
        return None

    def get(self, key: str) -> None:
        if self.restli_method("", "GET") and (rule_id := self.rule_id(key)) is not None:
            self.answer(200, self.rules.rules[rule_id])

    def post(self, key: str) -> None:
        body = self.json_object() if self.restli_method("PARTIAL_UPDATE") else None
        problem = None if body is None else patch_problems(body)
        if problem is not None:
            self.answer(*problem)
        elif body is not None and (rule_id := self.rule_id(key)) is not None:
            now_ms = int(self.sandbox.clock() * 1000)
            problem = self.rules.update(rule_id, body["patch"].get("$set", {}), now_ms)
            if problem is not None:
                self.answer(*problem)
            else:
                self.answer(204)


class _CampaignConversions(_LinkedIn):
    def put(self, key: str | None) -> None:
        if key is None:
            self.batch_update()
            return
        if not self.restli_method("", "UPDATE"):
            return
        raw = self.request.path[len(_ASSOCIATIONS_PATH) :]  # still encoded, as rest.li parses
        pair = parse_key(raw)
        if pair is None:
            message = f"Invalid campaignConversions key {raw!r}: use {KEY_FORM}"
            self.answer(400, linkedin_error(400, message))
            return
        body = self.json_object(required=False)
        if body is None:
            return
        problem = entity_problem(body, pair)
        if problem is not None:
            self.answer(400, problem)
        else:
            self.rules.associate(*pair)
            self.answer(204)

    def batch_update(self) -> None:
        if not self.restli_method("", "BATCH_UPDATE"):
            return
        pairs = parse_ids(self.request.query)
        if not pairs:
            message = f"ids must be List(key,...) of keys {KEY_FORM}"
            self.answer(400, linkedin_error(400, message))
            return
        body = self.json_object()
        if body is not None:
            answer, accepted = batch_associations(pairs, body)
            for pair in accepted:
                self.rules.associate(*pair)
            self.answer(*answer)


class _Associations(JsonHandler):
    def get(self) -> None:
        self.answer(200, cast(ConversionRules, self.settings["linkedin_rules"]).to_json())


def make_app(
    sandbox: Sandbox | None = None, *, oldest_version: str = OLDEST_VERSION
) -> tornado.web.Application:
    """The LinkedIn sandbox: LinkedIn's routes plus the control API under `/_sandbox/`.

    Args:
        sandbox: Shared state; by default a new one allowing 300 calls per token per minute.
            The OAuth config fields are added to it.
        oldest_version: Oldest `LinkedIn-Version` served (YYYYMM); older ones get 426.

    Returns:
        The tornado application; serve it with `sandboxes.base.serve`.
    """
    if sandbox is None:
        sandbox = Sandbox(rate_limit=RATE_LIMIT, rate_window_s=60.0)
    sandbox.add_config(OAUTH_CONFIG)
    rules, grants = ConversionRules(), OAuthGrants(sandbox)
    sandbox.on_reset += [rules.clear, grants.clear]
    sandbox.on_configure.append(grants.configured)
    routes = [
        (r"/rest/conversionEvents", _ConversionEvents),
        (r"/rest/conversions", _Conversions),
        (r"/rest/conversions/([^/]+)", _Conversion),
        (r"/rest/campaignConversions(?:/(.+))?", _CampaignConversions),
        (r"/oauth/v2/accessToken", AccessToken),
        (r"/_sandbox/linkedin/associations", _Associations),
    ]
    settings = {"linkedin_rules": rules, "linkedin_oauth": grants}
    app = application(sandbox, routes, linkedin_oldest_version=oldest_version, **settings)
    # Host rules come before the app's own, so this one wins over `/_sandbox/(\w+)`.
    app.add_handlers(r".*", [(r"/_sandbox/oauth", OAuthTallies)])
    return app
