"""A local Pinterest Conversions API v5 (seed 001; Pinterest's contract v5.23.0 beside this file).

Route: `POST /v5/ad_accounts/{ad_account_id}/events[?test=true]`. The body is checked against
the official contract (`contract_errors`): envelope problems (not JSON, no `data`, 0 or more
than 1000 events) refuse the call with 400; each event is then validated on its own, so the
good ones are processed (and recorded) while the bad ones come back `failed` in a 422. Error
bodies and codes are the contract's; per-event messages and the rules the contract leaves to
prose (event name and source lists, hashing, event age) are our wording and our reading.
Calls are limited per ad account (`rate_limit`, 5,000/min). Test calls (`?test=true`) are
answered alike and recorded with their query but without events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from functools import cache
from importlib import resources
from typing import Any, cast

import tornado.web
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

from sandboxes.base import Json, PlatformHandler, Sandbox, application

CONTRACT_FILE = "pinterest-v5-conversion-events.openapi.json"
RATE_LIMIT = 5000  # calls per ad account per minute (seed 001)
WINDOW_S = 7 * 86_400  # our reading: PinterestSettings.acceptance_window_s's default
FUTURE_SKEW_S = 300
NO_EMAIL_WARNING = "no hashed email; match rate will be lower"
_PARTIAL = "Not all events were successfully processed."  # the contract's 422 description
_ERRORS: dict[int, Json] = {
    400: {"code": 4196, "message": "The request was invalid."},
    401: {"code": 2, "message": "Authentication failed."},
    403: {"code": 29, "message": "You are not permitted to access that resource."},
    429: {
        "code": 8,
        "message": "This request exceeded a rate limit. This can happen if the client exceeds "
        "one\nof the published rate limits within a short time window.",
    },
    503: {
        "code": 4197,
        "message": "The endpoint has been ramped down and is currently not accepting any traffic.",
    },
}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ACCOUNT = re.compile(r"\d{1,18}")
_MESSAGE_CHARS = 300
_UNIDENTIFIED = "needs em, hashed_maids, or both client_ip_address and client_user_agent"


@cache
def contract() -> Json:
    """Pinterest's OpenAPI document for the Send conversions operation, as shipped."""
    text = resources.files("sandboxes").joinpath(CONTRACT_FILE).read_text("utf-8")
    return cast(Json, json.loads(text))


@cache
def _validator(kind: str) -> OAS30Validator:
    """`body`: ConversionEvents; `event`: one of its items; `envelope`: it without its items."""
    document = contract()
    if kind == "envelope":
        root = document["components"]["schemas"]["ConversionEvents"]
        data = {k: v for k, v in root["properties"]["data"].items() if k != "items"}
        return OAS30Validator({**root, "properties": {"data": data}})
    pointer = {"body": "", "event": "/properties/data/items"}[kind]
    # The contract's refs are "#/components/...": they resolve against the whole document.
    registry = Registry().with_resource("urn:pinterest", DRAFT4.create_resource(document))
    ref = f"urn:pinterest#/components/schemas/ConversionEvents{pointer}"
    return OAS30Validator({"$ref": ref}, registry=registry)


@cache
def listed(field: str) -> frozenset[str]:
    """The values the contract's prose lists for an event field (`event_name`, `action_source`)."""
    items = contract()["components"]["schemas"]["ConversionEvents"]["properties"]["data"]["items"]
    return frozenset(re.findall(r"`(\w+)`", items["properties"][field]["description"]))


@cache
def hashed_fields() -> tuple[str, ...]:
    """The `user_data` fields the contract wants as arrays of SHA-256 digests."""
    fields = contract()["components"]["schemas"]["ConversionEventsUserDataProperties"]
    return tuple(name for name, spec in fields["properties"].items() if spec["type"] == "array")


def _path(error: ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "body"


def _errors(kind: str, instance: object) -> list[str]:
    found = sorted(_validator(kind).iter_errors(instance), key=lambda e: list(e.absolute_path))
    lines = []
    for error in found:
        where, message = _path(error), error.message
        if error.validator == "anyOf" and where.endswith("user_data"):
            # Each branch repeats the properties' errors: report one, else the missing ones.
            inner = [e for e in error.context or [] if e.validator != "required"]
            where, message = (
                (_path(inner[0]), inner[0].message) if inner else (where, _UNIDENTIFIED)
            )
        elif error.validator in ("minItems", "maxItems"):  # its message repeats the whole list
            message = (
                f"holds {len(error.instance)} items; {error.validator} is {error.validator_value}"
            )
        lines.append(f"{where}: {message}"[:_MESSAGE_CHARS])
    return lines


def contract_errors(body: object) -> list[str]:
    """Where a whole request body breaks the official `ConversionEvents` schema ([] if valid).

    Args:
        body: The parsed JSON of a request, e.g. `{"data": [event, ...]}`.

    Returns:
        One "path: message" line per violation, in path order.
    """
    return _errors("body", body)


def _rule_problems(event: Json, now_s: float) -> str | None:
    """The first rule the contract states only in prose that `event` breaks."""
    for field in ("event_name", "action_source"):
        if event[field] not in listed(field):
            return f"{field}: {event[field]!r} is not one of {', '.join(sorted(listed(field)))}"
    if event["event_time"] > now_s + FUTURE_SKEW_S:
        return "event_time: is in the future"
    if event["event_time"] < now_s - WINDOW_S:
        return "event_time: is older than 7 days"
    user = event["user_data"]
    for name in hashed_fields():
        if not all(_SHA256.fullmatch(value) for value in user.get(name, [])):
            return f"user_data.{name}: every value must be a lowercase SHA-256 hex digest"
    return None


def check_event(event: object, now_s: float) -> tuple[str | None, str | None]:
    """Pinterest's verdict on one event: (error_message, warning_message), None when absent."""
    errors = _errors("event", event)
    if errors:
        return "; ".join(errors[:5]), None
    event = cast(Json, event)
    problem = _rule_problems(event, now_s)
    if problem is not None:
        return problem, None
    user = event["user_data"]
    return None, (None if user.get("em") or user.get("hashed_maids") else NO_EMAIL_WARNING)


class _Events(PlatformHandler):
    id_field = "event_id"

    @property
    def denied(self) -> frozenset[str]:
        return cast(frozenset[str], self.settings["pinterest_denied_accounts"])

    def error_body(self, status: int, reason: str = "") -> Json:
        # Statuses the contract does not list get its generic Error shape (our wording).
        return _ERRORS.get(status) or super().error_body(status, reason) | {"code": status}

    def check_target(self) -> tuple[int, Json] | None:
        account = self.path_args[0]
        if not _ACCOUNT.fullmatch(account):
            return 400, {"code": 4196, "message": f"Invalid ad_account_id {account!r}"}
        if account in self.denied:
            return 403, self.error_body(403)
        return None

    def rate_key(self) -> str:
        return f"account:{self.path_args[0]}"  # Pinterest counts calls per ad account (seed 001)

    def _invalid(self, detail: str) -> None:
        self.answer(400, {"code": 4196, "message": f"The request was invalid. {detail}"})

    def post(self, account: str) -> None:
        test = self.get_query_argument("test", "false").lower()
        if test not in ("true", "false"):
            self._invalid(f"test must be true or false, not {test!r}")
            return
        try:
            body: Any = json.loads(self.request.body)
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            self._invalid("The body is not JSON.")
            return
        problems = _errors("envelope", body)
        if problems:
            self._invalid("; ".join(problems[:5]))
            return
        now_s = self.sandbox.clock()
        verdicts = [check_event(event, now_s) for event in body["data"]]
        events = [
            {"status": "failed" if e else "processed", "error_message": e, "warning_message": w}
            for e, w in verdicts
        ]
        good = [
            event for event, (error, _) in zip(body["data"], verdicts, strict=True) if not error
        ]
        if test == "true":  # Pinterest records no test events; the call stays visible
            self.sandbox.accept(self.token, self.request, [], self.id_field)
        elif good:
            self.sandbox.accept(self.token, self.request, good, self.id_field)
        summary = {"num_events_received": len(events), "num_events_processed": len(good)}
        answer = {**summary, "events": events}
        if len(good) == len(events):
            self.answer(200, answer)
        else:
            self.answer(422, {"code": 953, "message": _PARTIAL, "details": answer})


def make_app(
    sandbox: Sandbox | None = None, *, denied_accounts: Collection[str] = ()
) -> tornado.web.Application:
    """The Pinterest sandbox: the Send conversions route plus the control API under `/_sandbox/`.

    Args:
        sandbox: Shared state; by default a new one allowing 5,000 calls per ad account per
            minute (its `rate_limit` counts per ad account here, not per token).
        denied_accounts: Ad account ids the token may not use: calls get 403 (code 29).

    Returns:
        The tornado application; serve it with `sandboxes.base.serve`.
    """
    if sandbox is None:
        sandbox = Sandbox(rate_limit=RATE_LIMIT, rate_window_s=60.0)
    routes = [(r"/v5/ad_accounts/([^/]+)/events", _Events)]
    return application(sandbox, routes, pinterest_denied_accounts=frozenset(denied_accounts))
