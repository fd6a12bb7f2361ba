"""What the CLI tells a user about an error: one line naming the cause, or None for a bug.

The one place that turns exceptions into user messages: the product's own errors, Redis
being unreachable, and a configuration file that is missing, not TOML or not valid.
"""

from __future__ import annotations

import os
import re
import tomllib

import pydantic
import redis

from dispatcher.errors import DispatcherError

_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def config_file() -> str:
    """The configuration file settings are read from, as the user would name it."""
    from dispatcher.settings import config_file as found

    return str(found() or "the configuration")


def redacted(url: str) -> str:
    """`url` without its password."""
    return _PASSWORD.sub(r"\1***@", url)


def _redis_url() -> str:
    from dispatcher.settings import get_settings

    try:
        return get_settings().redis_url
    except Exception:  # the settings themselves may be what is broken
        return os.environ.get("CONVDISP_REDIS_URL", "the configured redis_url")


def user_error(exc: BaseException) -> str | None:
    """A one-line message for an error the user can fix, or None (a bug: show the traceback)."""
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"{config_file()}: not valid TOML: {exc}"
    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{config_file()}: {where}: {first['msg']}{more}"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        url = _redis_url()
        return f"Redis at {redacted(url)} is unreachable ({exc}); give --redis-url or start it"
    if isinstance(exc, DispatcherError):
        cause = exc.__cause__
        if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
            return user_error(cause)
        return redacted(str(exc))
    if isinstance(exc, FileNotFoundError | PermissionError):
        return f"{exc.filename}: {exc.strerror}"
    return None
