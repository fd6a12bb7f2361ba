"""Settings: defaults here, overridden by a TOML file, overridden by environment variables.

Precedence (highest first): keyword arguments, `CONVDISP_*` environment variables
(nested with `__`, e.g. `CONVDISP_LINKEDIN__RATE_PER_MIN=600`), the TOML file named by
`CONVDISP_CONFIG` (else `config/dispatcher.toml` under the current directory, else
`/etc/convdispatch/dispatcher.toml`, when one exists), then these defaults.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dispatcher.currencies import Currency
from dispatcher.errors import ConfigurationError, UnknownDestinationError

Platform = Literal["linkedin", "pinterest", "yandex", "vnative"]
PLATFORMS: tuple[Platform, ...] = ("linkedin", "pinterest", "yandex", "vnative")
DAY_S = 86_400.0
LINKEDIN_VERSION = "202603"  # pinned by peers in late 2026; see README "LinkedIn versions"
_DESTINATION_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class PlatformSettings(BaseModel):
    """Delivery knobs every platform has; each platform subclass sets its own defaults."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str
    batch_size: int = Field(gt=0)
    max_wait_s: float = Field(default=1.0, ge=0, description="Longest a partial batch waits.")
    rate_per_min: float = Field(gt=0, description="Calls per minute per rate-limit scope.")
    burst: int = Field(default=1, ge=1, description="Calls a scope may make back to back.")
    max_in_flight: int | None = Field(default=None, gt=0, description="Calls at once per scope.")
    timeout_s: float = Field(default=30.0, gt=0)
    max_backlog: int = Field(default=2_000_000, gt=0, description="Per destination.")
    acceptance_window_s: float = Field(gt=0, description="How old an event the platform takes.")
    max_retry_age_s: float = Field(default=7 * DAY_S, gt=0)
    max_attempts: int = Field(default=25, gt=0)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_cap_s: float = Field(default=600.0, gt=0)
    max_batches_in_flight: int = Field(
        default=2, ge=1, description="Batches of one destination in flight at once."
    )


class LinkedInSettings(PlatformSettings):
    """LinkedIn Conversions API; the rate limit is per member access token (seed 003)."""

    base_url: str = "https://api.linkedin.com"
    version: str = Field(
        default=LINKEDIN_VERSION,
        pattern=r"^[0-9]{6}$",
        description="LinkedIn-Version (YYYYMM); LinkedIn sunsets a version after about a year.",
    )
    oauth_url: str = Field(
        default="https://www.linkedin.com/oauth/v2/accessToken",
        description="Where destinations with `oauth` refresh their access token.",
    )
    refresh_margin_s: float = Field(
        default=DAY_S,
        gt=0,
        description="Refresh an access token this long before it expires (or at half its life).",
    )
    batch_size: int = Field(default=5000, gt=0, le=5000)
    rate_per_min: float = Field(default=300, gt=0)
    acceptance_window_s: float = Field(default=90 * DAY_S, gt=0)


class PinterestSettings(PlatformSettings):
    """Pinterest Conversions API v5; the rate limit is per ad account (seed 001)."""

    base_url: str = "https://api.pinterest.com"
    batch_size: int = Field(default=1000, gt=0, le=1000)
    rate_per_min: float = Field(default=5000, gt=0)
    burst: int = Field(default=10, ge=1)
    # Pinterest documents no maximum event age; 7 days matches the retry budget. Unconfirmed.
    acceptance_window_s: float = Field(default=7 * DAY_S, gt=0)


class YandexSettings(PlatformSettings):
    """Yandex Metrica offline conversions: quotas per user (token) and per IP (seed 002)."""

    base_url: str = "https://api-metrica.yandex.net"
    batch_size: int = Field(default=10_000, gt=0)
    rate_per_min: float = Field(default=5000 / 1440, gt=0, description="5,000 requests/day/user")
    burst: int = Field(default=50, ge=1)
    ip_rate_per_s: float = Field(default=30, gt=0, description="Requests per second per IP.")
    max_in_flight: int | None = Field(default=3, gt=0, description="Parallel requests per user.")
    max_wait_s: float = Field(default=10.0, ge=0)
    # Conversions link only to visits of the past 21 days; older rows would be dropped.
    acceptance_window_s: float = Field(default=21 * DAY_S, gt=0)
    job_poll_interval_s: float = Field(default=30.0, gt=0)
    job_max_age_s: float = Field(
        default=2 * DAY_S, gt=0, description="An upload unfinished this long is dead-lettered."
    )
    lookup_delay_s: float = Field(
        default=10.0, ge=0, description="After an unknown outcome, wait this long to list uploads."
    )


class VNativeSettings(PlatformSettings):
    """vNative (Trackier) conversion import; batch size and rate are undocumented (seed 000)."""

    base_url: str = "https://api.vnative.com"
    batch_size: int = Field(default=500, gt=0)
    rate_per_min: float = Field(default=60, gt=0)
    acceptance_window_s: float = Field(default=30 * DAY_S, gt=0)
    job_poll_interval_s: float = Field(default=15.0, gt=0)
    job_max_age_s: float = Field(
        default=DAY_S, gt=0, description="An import unfinished this long is dead-lettered."
    )
    poll_rate_per_min: float = Field(
        default=6000, gt=0, description="Job polls and listings per minute per API key."
    )


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


def check_destination_id(name: str) -> None:
    """Raise `ValueError` unless `name` is a valid destination id (it is part of Redis keys)."""
    if not _DESTINATION_ID.match(name):
        raise ValueError(f"destination id {name!r} must match {_DESTINATION_ID.pattern}")


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


SEARCHED = (Path("config/dispatcher.toml"), Path("/etc/convdispatch/dispatcher.toml"))


def config_file() -> Path | None:
    """The TOML file settings come from: `CONVDISP_CONFIG`, else the first of `SEARCHED`
    that exists (relative to the current directory, then /etc), else none."""
    named = os.environ.get("CONVDISP_CONFIG")
    if named:
        return Path(named)
    return next((path for path in SEARCHED if path.exists()), None)


def route_problem(route: Route, destinations: Mapping[str, Destination]) -> str | None:
    """What is wrong with `route` among `destinations`, or None: the one check of a route,
    declared in the configuration or registered at runtime."""
    if route.destination not in destinations:
        return f"unknown destination {route.destination!r}"
    needs = {"linkedin": ("conversion", "rule"), "yandex": ("target",)}
    given = needs.get(destinations[route.destination].platform, ())
    if given and all(getattr(route, name) is None for name in given):
        return f"a route to {route.destination!r} needs {' or '.join(given)}"
    return None


class Settings(BaseSettings):
    """Everything the producer and the workers read; see the README's reference table."""

    model_config = SettingsConfigDict(
        env_prefix="CONVDISP_", env_nested_delimiter="__", extra="forbid",
        hide_input_in_errors=True,
    )  # fmt: skip

    redis_url: str = "redis://localhost:6379/0"
    broker_url: str | None = Field(
        default=None, description="Celery's broker; default: the event store's redis_url."
    )
    redis_cluster: bool = Field(
        default=False, description="redis_url is a node of a Redis Cluster (needs broker_url)."
    )
    keyspace_shards: int = Field(
        default=16, ge=1, le=16384,
        description="Cluster mode: shards of the event store; fixed for an installation.",
    )  # fmt: skip
    lease_s: float = Field(
        default=3.0, gt=0, description="A drain's lease, renewed every lease_s/3 while it runs."
    )
    task_time_limit_s: float = Field(default=600.0, gt=0, description="Kills a hung drain.")
    scheduler_tick_s: float = Field(default=0.1, gt=0, description="How often schedulers look.")
    scheduler_batch: int = Field(default=1000, gt=0, description="Due destinations per look.")
    dispatch_claim_s: float = Field(
        default=5.0, gt=0, description="A sent drain task that has not started by then is resent."
    )
    drain_group_size: int = Field(
        default=16, gt=0, description="At most this many destinations per drain task."
    )
    drain_parallel: int = Field(
        default=8, gt=0, description="Destinations of one drain task drained at once."
    )
    drain_max_batches: int = Field(
        default=20, gt=0, description="Batches per destination per task."
    )
    pause_recheck_s: float = Field(
        default=30.0, gt=0, description="How often a paused destination checks for a new token."
    )
    max_limiter_wait_s: float = Field(
        default=2.0, gt=0, description="Longer waits are rescheduled instead of slept."
    )
    idempotency_window_s: float = Field(
        default=86_400.0, ge=0, description="A re-enqueued event id is a no-op this long."
    )
    memory_high_watermark: float = Field(
        default=0.9, gt=0, le=1, description="Enqueue refuses past this share of maxmemory."
    )
    dead_letter_retention_s: float = Field(
        default=30 * DAY_S, gt=0, description="Dead letters older than this are trimmed."
    )
    registry_refresh_s: float = Field(
        default=1.0, gt=0, description="How often a process looks for registry changes."
    )
    metrics_max_destinations: int = Field(
        default=1000, gt=0, description="Per-destination series beyond this: the busiest only."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Worker logs: text, or one JSON object per line."
    )
    linkedin: LinkedInSettings = LinkedInSettings()
    pinterest: PinterestSettings = PinterestSettings()
    yandex: YandexSettings = YandexSettings()
    vnative: VNativeSettings = VNativeSettings()
    destinations: dict[str, Destination] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @field_validator("destinations")
    @classmethod
    def _ids_are_key_safe(cls, value: dict[str, Destination]) -> dict[str, Destination]:
        for name in value:
            check_destination_id(name)
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The fields, with any password in a Redis URL shown as ***."""
        for name, value in super().__repr_args__():
            yield name, redacted(value) if name in ("redis_url", "broker_url") and value else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for i, route in enumerate(self.routes):
            problem = route_problem(route, self.destinations)
            if problem is not None:
                raise ValueError(f"routes[{i}]: {problem}")
        if self.redis_cluster and not self.broker_url:
            raise ValueError("redis_cluster needs broker_url: Celery's broker cannot be a cluster")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            if not path.exists():
                raise ConfigurationError(f"CONVDISP_CONFIG names {path}, which does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def platform(self, name: str) -> PlatformSettings:
        """The settings table of one platform."""
        table: PlatformSettings = getattr(self, name)
        return table

    def destination(self, name: str) -> Destination:
        """A configured destination, or a `ConfigurationError` naming the known ones."""
        try:
            return self.destinations[name]
        except KeyError:
            known = ", ".join(sorted(self.destinations)) or "none"
            raise UnknownDestinationError(
                f"unknown destination {name!r} (configured: {known})"
            ) from None

    @property
    def broker(self) -> str:
        """The Celery broker's URL."""
        return self.broker_url or self.redis_url

    def queue(self, platform: str) -> str:
        """The Celery queue a platform's workers consume."""
        return f"convdispatch.{platform}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
