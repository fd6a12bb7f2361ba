"""Destinations and routes: where events go, with which credentials, under which names.

A `Destination` is one platform account and the credential it is sent with; a `Route`
says where a platform-neutral `Conversion` goes. Both are read from the configuration
(`dispatcher.settings`) or registered at runtime (`dispatcher.registry`). The secret
helpers live here too: a token is cleaned once, and a Redis URL is shown redacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Literal
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from dispatcher.currencies import Currency
from dispatcher.errors import ConfigurationError
from dispatcher.identity import masked

Platform = Literal["linkedin", "pinterest", "yandex", "vnative"]
PLATFORMS: tuple[Platform, ...] = ("linkedin", "pinterest", "yandex", "vnative")
_DESTINATION_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class OAuthRefresh(BaseModel):
    """LinkedIn OAuth 2.0 refresh: the names of the environment variables holding the app's
    client id and secret and the member's refresh token (never the values themselves)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    client_id_env: str = Field(min_length=1)
    client_secret_env: str = Field(min_length=1)
    refresh_token_env: str = Field(min_length=1)

    def read(self) -> tuple[str, str, str]:
        """Client id, client secret and refresh token (`ConfigurationError` if one is unset)."""
        names = (self.client_id_env, self.client_secret_env, self.refresh_token_env)
        return _env(names[0]), _env(names[1]), _env(names[2])


RULE_URN = r"^urn:lla:llaPartnerConversion:[0-9]+$"
WindowDays = Literal[1, 7, 30, 90]


class LinkedInRule(BaseModel):
    """A LinkedIn conversion rule as the deployment wants it (seed 003, "Create a rule").

    `convdispatch linkedin ensure` creates it when no rule of the account has this name,
    updates it when a field differs, and associates it with `campaigns`.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=256)
    type: str = Field(pattern=r"^[A-Z][A-Z_]*$", description="LEAD, PURCHASE, SIGN_UP...")
    account: str | None = Field(
        default=None, pattern=r"^[0-9]{1,18}$", description="sponsoredAccount id"
    )
    post_click_days: WindowDays = 30
    view_through_days: WindowDays = 7
    attribution_type: Literal["LAST_TOUCH_BY_CAMPAIGN", "LAST_TOUCH_BY_CONVERSION"] = (
        "LAST_TOUCH_BY_CAMPAIGN"
    )
    enabled: bool = True
    auto_association: Literal["ALL_CAMPAIGNS", "OBJECTIVE_BASED"] | None = Field(
        default=None, description="Only applied when the rule is created (LinkedIn's choice)."
    )
    campaigns: list[str] = Field(
        default_factory=list, description="sponsoredCampaign ids (or URNs) to associate."
    )

    @field_validator("campaigns")
    @classmethod
    def _campaign_ids(cls, value: list[str]) -> list[str]:
        prefix = "urn:li:sponsoredCampaign:"
        ids = [c.removeprefix(prefix) for c in value]
        for given, id_ in zip(value, ids, strict=True):
            if not re.fullmatch(r"[0-9]{1,18}", id_):
                raise ValueError(f"campaign {given!r} is not a sponsoredCampaign id or URN")
        return list(dict.fromkeys(ids))


# A URL's password: in its user part, up to the last @ before the path (a password may
# hold an @, as redis-py reads it), or as a `password=` query parameter.
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^/\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#\s]*", re.IGNORECASE)


def redacted(text: str) -> str:
    """`text` with the password of any URL in it replaced by ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***@", text))


def without_secrets(data: bytes, secrets: Iterable[str]) -> bytes:
    """`data` (a platform's answer) with each of `secrets` (the credentials its request
    carried: a platform may echo them in an error) as ***, raw, percent-encoded or
    JSON-escaped. A secret under 8 characters is left: no real one is so short, and it
    would hide ordinary text (a test key "2024" in every date)."""
    for secret in secrets:
        if len(secret) < 8:
            continue
        escaped = json.dumps(secret)[1:-1]  # and with its "/" escaped, as JSON may write it
        for form in {secret, quote(secret, safe=""), quote_plus(secret), escaped,
                     escaped.replace("/", "\\/")}:  # fmt: skip
            if form.encode() in data:
                data = data.replace(form.encode(), b"***")
    return data


def redacted_url(url: str) -> str:
    """One URL with its password as ***, as redis-py reads the password (a space in it
    too, which `redacted` cannot tell from the text after a URL)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL urllib can split (an unclosed [): the text's rules
        return redacted(url)
    if password is not None:
        credentials, _, host = parts.netloc.rpartition("@")
        url = urlunsplit(parts._replace(netloc=f"{credentials.partition(':')[0]}:***@{host}"))
    return redacted(url)


def clean_token(value: str, where: str) -> str:
    """`value` without surrounding whitespace (a secret file's newline). An empty value,
    or one holding anything but printable ASCII (a control character: header injection;
    text an HTTP header cannot carry), is refused, naming `where`, never the value."""
    value = value.strip()
    if not value:
        raise ConfigurationError(f"{where} is empty or unset")
    if not (value.isascii() and value.isprintable()):
        raise ConfigurationError(f"{where} holds a control or non-ASCII character: not a token")
    return value


def _env(name: str) -> str:
    return clean_token(os.environ.get(name, ""), f"environment variable {name}")


class Destination(BaseModel):
    """One place events go: a platform plus the credentials and account it is sent with.

    A token is given inline (`token`, for development) or, better, by the name of the
    environment variable that holds it (`token_env`), read when a request is built.
    A LinkedIn destination may instead (or as well) refresh its token with `oauth`.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    platform: Platform
    token: SecretStr | None = None
    token_env: str | None = None
    oauth: OAuthRefresh | None = Field(
        default=None, description="LinkedIn: refresh the access token (README: OAuth)."
    )
    rules: list[LinkedInRule] = Field(
        default_factory=list,
        description="LinkedIn: conversion rules `convdispatch linkedin ensure` keeps in place.",
    )
    _token_source: Callable[[], str] | None = PrivateAttr(default=None)
    allow_plain_user_info: bool = Field(
        default=False,
        description="LinkedIn: userInfo names are matched in plain text, so accepting them "
        "stores names unhashed in Redis: off unless you opt in.",
    )
    ad_account_id: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,18}$",
        description="Pinterest: the ad account; LinkedIn: the default account of `rules`",
    )
    test: bool = Field(default=False, description="Pinterest: send with ?test=true")
    counter_id: str | None = Field(default=None, pattern=r"^[0-9]+$", description="Yandex")
    client_id_type: Literal["CLIENT_ID", "USER_ID", "YCLID", "PURCHASE_ID"] = Field(
        default="CLIENT_ID", description="Yandex: the identifier column of this counter's uploads"
    )
    send_postback: bool = Field(default=False, description="vNative: send_postback")
    tenant: str | None = Field(
        default=None, max_length=128, description="A label to filter status and metrics by."
    )
    enabled: bool = Field(default=True, description="False: new events refused, delivery paused.")
    draining: bool = Field(
        default=False, description="Being removed: new events refused, the backlog delivered."
    )

    @field_validator("token")
    @classmethod
    def _clean(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            return SecretStr(clean_token(value.get_secret_value(), "token"))
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _complete(self) -> Destination:
        if self.token is not None and self.token_env is not None:
            raise ValueError("give only one of token or token_env")
        if self.oauth is None and self.token is None and self.token_env is None:
            raise ValueError("give one of token, token_env or oauth")
        if self.platform != "linkedin" and (self.oauth is not None or self.rules):
            raise ValueError("oauth and rules are for linkedin destinations")
        if any(rule.account is None for rule in self.rules) and self.ad_account_id is None:
            raise ValueError("a rule without account needs the destination's ad_account_id")
        if self.platform == "pinterest" and self.ad_account_id is None:
            raise ValueError("a pinterest destination needs ad_account_id")
        if self.platform == "yandex" and self.counter_id is None:
            raise ValueError("a yandex destination needs counter_id")
        return self

    def secret(self) -> str:
        """The access token, unwrapped; only request builders call this."""
        if self._token_source is not None:
            return self._token_source()
        token = self.static_token()
        if token is None:  # oauth without a first token: only the workers' token store has one
            raise ConfigurationError("the access token comes from a refresh (oauth): none yet")
        return token

    def static_token(self) -> str | None:
        """The configured access token, if any (`ConfigurationError` if its env var is unset)."""
        if self.token is not None:
            return self.token.get_secret_value()
        return None if self.token_env is None else _env(self.token_env)

    def with_token_source(self, source: Callable[[], str]) -> Destination:
        """A copy whose `secret()` asks `source` (the workers' shared OAuth token store)."""
        copy = self.model_copy()
        copy._token_source = source
        return copy

    def fingerprint(self) -> str:
        """A short one-way digest of the credentials: names rate-limit scopes, detects
        rotation. With `oauth` it digests the client id and refresh token, which a refresh
        does not change."""
        try:
            if self.oauth is not None:
                client_id, _, refresh_token = self.oauth.read()
                material = f"oauth:{client_id}:{refresh_token}"
            else:
                material = self.static_token() or ""
        except ConfigurationError:  # credentials unset here: nothing can be sent anyway
            return "unset"
        return hashlib.sha256(material.encode()).hexdigest()[:16]


def destination_id(name: object) -> str:
    """`name`, or a `ConfigurationError` when it is not text (a destination id's type)."""
    if not isinstance(name, str):
        kind = type(name).__name__
        raise ConfigurationError(f"destination must be a destination id, not a {kind}")
    return name


def check_destination_id(name: str) -> None:
    """Raise `ValueError` unless `name` is a valid destination id (it is part of Redis keys)."""
    if not _DESTINATION_ID.match(name):
        raise ValueError(f"destination id {masked(name)!r} must match {_DESTINATION_ID.pattern}")


class Route(BaseModel):
    """Where one kind of platform-neutral `Conversion` goes, and what it is called there.

    `conversion` is a LinkedIn conversion rule URN (or `rule` its name), `event_name`/
    `action_source`/`partner_name` are Pinterest's, `target` is a Yandex goal; `sub1`..`sub10`
    are static vNative sub values; `value`/`currency` a fixed value for events without one.
    A `Conversion` field of the same meaning overrides the route's.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    event: str = Field(min_length=1, description="The Conversion.event this route takes.")
    destination: str
    conversion: str | None = Field(default=None, pattern=RULE_URN)
    rule: str | None = Field(
        default=None, min_length=1, description="LinkedIn: a conversion rule by name."
    )
    event_name: str | None = None
    action_source: str = "web"
    partner_name: str | None = Field(default=None, description="Pinterest partner_name")
    target: str | None = None
    value: Decimal | None = Field(default=None, ge=0, description="a fixed value (with currency)")
    currency: Currency | None = None
    sub1: str | None = None
    sub2: str | None = None
    sub3: str | None = None
    sub4: str | None = None
    sub5: str | None = None
    sub6: str | None = None
    sub7: str | None = None
    sub8: str | None = None
    sub9: str | None = None
    sub10: str | None = None

    @model_validator(mode="after")
    def _value_has_currency(self) -> Route:
        if self.value is not None and self.currency is None:
            raise ValueError("a route's value needs its currency")
        return self


def route_problem(route: Route, destinations: Mapping[str, Destination]) -> str | None:
    """What is wrong with `route` among `destinations`, or None: the one check of a route,
    declared in the configuration or registered at runtime."""
    if route.destination not in destinations:
        return f"unknown destination {masked(route.destination)!r}"
    needs = {"linkedin": ("conversion", "rule"), "yandex": ("target",)}
    given = needs.get(destinations[route.destination].platform, ())
    if given and all(getattr(route, name) is None for name in given):
        return f"a route to {masked(route.destination)!r} needs {' or '.join(given)}"
    return None
