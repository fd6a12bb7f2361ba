"""Settings: defaults here, overridden by a TOML file, overridden by environment variables.

Precedence (highest first): keyword arguments, `CONVDISP_*` environment variables
(nested with `__`, e.g. `CONVDISP_LINKEDIN__RATE_PER_MIN=600`), the TOML file named by
`CONVDISP_CONFIG` (else `config/dispatcher.toml` under the current directory, else
`/etc/convdispatch/dispatcher.toml`, when one exists), then these defaults.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from dispatcher.destination import (
    PLATFORMS,
    RULE_URN,
    Destination,
    LinkedInRule,
    OAuthRefresh,
    Platform,
    Route,
    check_destination_id,
    clean_token,
    redacted,
    redacted_url,
    route_problem,
)
from dispatcher.errors import ConfigurationError, UnknownDestinationError
from dispatcher.identity import masked

# Destinations and routes are defined in `dispatcher.destination`; they are part of the
# settings' public surface, so they are importable from here too.
__all__ = [
    "DAY_S", "LINKEDIN_VERSION", "PLATFORMS", "RULE_URN", "SEARCHED", "Destination",
    "LinkedInRule", "LinkedInSettings", "OAuthRefresh", "PinterestSettings", "Platform",
    "PlatformSettings", "Route", "Settings", "VNativeSettings", "YandexSettings",
    "check_destination_id", "clean_token", "config_file", "get_settings", "redacted",
    "route_problem",
]  # fmt: skip

DAY_S = 86_400.0
MAX_SECONDS = 3650 * DAY_S  # a longer duration is a mistake (and overflows Redis's expiry)
MAX_NUMBER = 10**15  # counts and rates: exact in the Lua scripts' numbers (doubles)
LINKEDIN_VERSION = "202603"  # pinned by peers in late 2026; see README "LinkedIn versions"


def _within_bounds(model: BaseModel) -> None:
    """Refuse a number past its kind's bound: a duration (`*_s`) over `MAX_SECONDS`, any
    other count or rate over `MAX_NUMBER` (a value Redis or a script would fail on later,
    at every enqueue or drain)."""
    for name, value in model:
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        limit = MAX_SECONDS if name.endswith("_s") else MAX_NUMBER
        if value > limit:
            raise ValueError(f"{name} must be at most {limit:,.0f}")


class PlatformSettings(BaseModel):
    """Delivery knobs every platform has; each platform subclass sets its own defaults."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, allow_inf_nan=False)

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

    @model_validator(mode="after")
    def _bounded(self) -> PlatformSettings:
        _within_bounds(self)
        return self


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
    refresh_token_warn_days: float = Field(
        default=30,
        gt=0,
        description="Warn (logs, status, metrics) this long before an OAuth refresh token ends.",
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
    # The rate-limits page adds per-user (token) budgets: 100 calls/s, 10/s for test calls.
    user_rate_per_s: float = Field(default=100, gt=0, description="calls/s per token")
    test_rate_per_s: float = Field(default=10, gt=0, description="?test=true calls/s per token")
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


SEARCHED = (Path("config/dispatcher.toml"), Path("/etc/convdispatch/dispatcher.toml"))


def config_file() -> Path | None:
    """The TOML file settings come from: `CONVDISP_CONFIG`, else the first of `SEARCHED`
    that exists (relative to the current directory, then /etc), else none."""
    named = os.environ.get("CONVDISP_CONFIG")
    if named:
        return Path(named)
    return next((path for path in SEARCHED if path.exists()), None)


def _without_document(exc: SettingsError) -> SettingsError:
    """`exc` with its decoder's message but not its decoder's error, whose `doc` holds the
    whole variable (a token, maybe), for error trackers to record."""
    clean = SettingsError(str(exc))
    if exc.__cause__ is not None:
        clean.__cause__ = ValueError(str(exc.__cause__))
    return clean


class Settings(BaseSettings):
    """Everything the producer and the workers read; see the README's reference table."""

    model_config = SettingsConfigDict(
        env_prefix="CONVDISP_", env_nested_delimiter="__", extra="forbid",
        hide_input_in_errors=True, allow_inf_nan=False,
    )  # fmt: skip

    redis_cluster: bool = Field(  # before redis_url, whose check reads it
        default=False, description="redis_url is a node of a Redis Cluster (needs broker_url)."
    )
    redis_url: str = "redis://localhost:6379/0"
    broker_url: str | None = Field(
        default=None, description="Celery's broker; default: the event store's redis_url."
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
    scheduler_idle_tick_s: float = Field(
        default=0.5,
        gt=0,
        le=5.0,  # a worker that looks less than every 10 s drops out of the slot roll
        description="How often after 5 s of looks that found nothing due (never later than "
        "the next due time a look saw).",
    )
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

    def __init__(self, **values: Any) -> None:
        """The fields from `values`, the `CONVDISP_*` variables and the TOML file. One
        that cannot be read (not TOML, not UTF-8, not JSON, a bad value) raises
        `ConfigurationError`, naming where without repeating the value (it may be a
        token); the cause stays `__cause__` (for a variable that is not JSON, without the
        decoder's error, which holds the whole variable)."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(masked(str(part)) for part in first["loc"]) or "settings"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ConfigurationError(f"{where}: {first['msg']}{more}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{config_file()}: not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{config_file()}: not UTF-8 text") from exc
        except OSError as exc:
            raise ConfigurationError(f"{config_file()}: cannot be read ({exc.strerror})") from exc
        except SettingsError as exc:  # a CONVDISP_ variable that is not JSON
            unreadable = _without_document(exc)
        else:
            return
        # Raised outside the handler, so the decoder's error is not its context either.
        raise ConfigurationError(str(unreadable)) from unreadable

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str, info: ValidationInfo) -> str:
        from dispatcher.storage import readable  # storage imports this module

        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        url = scheme.lower() + sep + rest  # a scheme is case-insensitive (RFC 3986)
        if not readable(url, bool(info.data.get("redis_cluster"))):
            raise ValueError(
                "redis-py cannot read it (host, port, database or a query option); "
                "percent-encode a password holding /, ? or #; several nodes need redis_cluster"
            )
        return url

    @field_validator("destinations")
    @classmethod
    def _ids_are_key_safe(cls, value: dict[str, Destination]) -> dict[str, Destination]:
        for name in value:
            check_destination_id(name)
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The fields, with any password in a Redis URL shown as ***."""
        for name, value in super().__repr_args__():
            yield (
                name,
                redacted_url(value) if name in ("redis_url", "broker_url") and value else value,
            )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        _within_bounds(self)
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
            if not path.is_file():  # pydantic-settings would quietly read nothing from it
                raise ConfigurationError(f"{path} is not a file: settings come from a TOML file")
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
                f"unknown destination {masked(name)!r} (configured: {known})"
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
    """The process-wide settings, read once (`Settings()`: a `ConfigurationError` when
    they cannot be read)."""
    return Settings()
