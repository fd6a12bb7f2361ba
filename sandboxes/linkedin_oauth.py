"""The LinkedIn sandbox's OAuth 2.0 token endpoint (PLATFORMS.md: LinkedIn's authentication
docs): `POST /oauth/v2/accessToken` refreshes an access token; issued tokens expire on
the sandbox clock; `GET /_sandbox/oauth` counts refreshes. Config fields: `OAUTH_CONFIG`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from typing import Any, cast

from sandboxes.base import Json, JsonHandler, Sandbox
from sandboxes.linkedin_elements import Answer

ACCESS_TOKEN_TTL_S = 60 * 86_400  # LinkedIn's authentication docs (PLATFORMS.md)
REFRESH_TOKEN_TTL_S = 365 * 86_400
SCOPE = "r_ads,rw_conversions"  # the seed's permissions


def _secret(v: object) -> bool:
    return v is None or (isinstance(v, str) and v != "")


def _positive(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


OAUTH_CONFIG: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "oauth_client_id": (None, _secret, "a non-empty string or null"),
    "oauth_client_secret": (None, _secret, "a non-empty string or null"),
    "oauth_refresh_token": (None, _secret, "a non-empty string or null"),
    "access_token_ttl_s": (ACCESS_TOKEN_TTL_S, _positive, "a positive number"),
    "refresh_token_ttl_s": (REFRESH_TOKEN_TTL_S, _positive, "a positive number"),
    "oauth_fail": (
        None,
        lambda v: v is None or (type(v) is int and 400 <= v <= 599),
        "null or an HTTP status from 400 to 599",
    ),
    "expired_tokens": (
        (),
        lambda v: isinstance(v, list | tuple) and all(isinstance(t, str) for t in v),
        "a list of strings",
    ),
}


class OAuthGrants:
    """What the token endpoint issued and how often it answered.

    Only the server's event loop changes the tokens and tallies; the configure hook may run
    in a test's thread, and only sets a time.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.clear()

    def clear(self) -> None:
        """Forget issued tokens and tallies."""
        self.expiry_s: dict[str, float] = {}  # issued access token -> when it expires
        self.refreshes = self.refused = 0
        self.authorized_s = self.sandbox.clock()

    def configured(self, changes: Mapping[str, Any]) -> None:
        """A new refresh token is a member's authorization: its lifetime starts now."""
        if "oauth_refresh_token" in changes:
            self.authorized_s = self.sandbox.clock()

    def expired(self, token: str) -> bool:
        """Whether `token` is listed as expired, or was issued here and has run out."""
        if token in self.sandbox.options["expired_tokens"]:
            return True
        expiry_s = self.expiry_s.get(token)
        return expiry_s is not None and self.sandbox.clock() >= expiry_s

    def refresh(self, form: Mapping[str, str]) -> tuple[int, Json]:
        """The token endpoint's answer to a refresh request."""
        options, now_s = self.sandbox.options, self.sandbox.clock()
        remaining_s = self.authorized_s + options["refresh_token_ttl_s"] - now_s
        fail = options["oauth_fail"]
        refusal: Answer = (
            injected_oauth_failure(fail)
            if fail is not None
            else refresh_refusal(form, options, remaining_s)
        )
        if refusal is not None:
            self.refused += 1
            return refusal
        self.refreshes += 1
        # An access token never outlives the refresh token (LinkedIn's docs: on day 360 both
        # expire in 5 days).
        lifetime_s = min(options["access_token_ttl_s"], remaining_s)
        token = "AQ" + secrets.token_urlsafe(48)
        self.expiry_s[token] = now_s + lifetime_s
        return 200, {
            "access_token": token,
            "expires_in": int(lifetime_s),
            "refresh_token": form["refresh_token"],
            "refresh_token_expires_in": int(remaining_s),
            "scope": SCOPE,
        }


_FORM_FIELDS = ("grant_type", "client_id", "client_secret", "refresh_token")
_FAIL_ERRORS = {400: "invalid_grant", 401: "invalid_client", 429: "temporarily_unavailable"}


def oauth_error(status: int, error: str, description: str) -> tuple[int, Json]:
    """An answer in the OAuth token endpoint's format."""
    return status, {"error": error, "error_description": description}


def injected_oauth_failure(status: int) -> tuple[int, Json]:
    """What `oauth_fail` makes the token endpoint answer (our wording)."""
    error = _FAIL_ERRORS.get(status, "server_error" if status >= 500 else "invalid_request")
    return oauth_error(status, error, f"Sandbox oauth_fail: answering {status}")


def refresh_refusal(form: Mapping[str, str], options: Json, remaining_s: float) -> Answer:
    """The token endpoint's refusal of a refresh, or None if it is granted.

    Args:
        form: The form fields sent.
        options: The sandbox's `oauth_client_id`, `oauth_client_secret`, `oauth_refresh_token`.
        remaining_s: Seconds the configured refresh token has left.
    """
    for name in _FORM_FIELDS:
        if not form.get(name):  # LinkedIn's wording (its OAuth docs' error table)
            return oauth_error(400, "invalid_request", f'A required parameter "{name}" is missing')
    if form["grant_type"] != "refresh_token":  # the sandbox has no member to authorize
        message = f"Unsupported grant_type {form['grant_type']!r}: only refresh_token is served"
        return oauth_error(400, "invalid_request", message)
    if not (
        _same(form["client_id"], options["oauth_client_id"])
        and _same(form["client_secret"], options["oauth_client_secret"])
    ):  # invalid_client's wording is LinkedIn's as its users quote it; the rest is ours
        return oauth_error(401, "invalid_client", "Client authentication failed")
    if not _same(form["refresh_token"], options["oauth_refresh_token"]):
        return oauth_error(400, "invalid_grant", "The provided refresh token is invalid")
    if remaining_s <= 0:
        message = "The provided refresh token has expired: the member must authorize again"
        return oauth_error(400, "invalid_grant", message)
    return None


def _same(sent: str, configured: object) -> bool:
    """Whether `sent` is the configured secret; an unset one matches nothing."""
    return isinstance(configured, str) and hmac.compare_digest(sent.encode(), configured.encode())


class AccessToken(JsonHandler):
    def post(self) -> None:
        arguments = self.request.body_arguments.items()  # parsed only from form-encoded bodies
        form = {name: values[0].decode("utf-8", "replace") for name, values in arguments}
        grants = cast(OAuthGrants, self.settings["linkedin_oauth"])
        status, body = grants.refresh(form)
        self.answer(status, body, {"Cache-Control": "no-store"})


class OAuthTallies(JsonHandler):
    def get(self) -> None:
        grants = cast(OAuthGrants, self.settings["linkedin_oauth"])
        self.answer(200, {"refreshes": grants.refreshes, "refused": grants.refused})
