"""What the CLI tells a user about an error: one line naming the cause, or None for a bug.

The one place that turns exceptions into user messages: the product's own errors, Redis
being unreachable or refusing (a database it does not have), a Redis URL redis-py cannot
read, and a configuration that is missing, not UTF-8, not TOML or not valid — blamed on
the environment variable that set the bad field when one did, else on the file.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pydantic
import redis
from pydantic_settings import SettingsError

from dispatcher.errors import DispatcherError
from dispatcher.identity import masked
from dispatcher.settings import redacted

_ENV_PREFIX = "CONVDISP_"


def config_file() -> str:
    """The configuration file settings are read from, as the user would name it."""
    from dispatcher.settings import config_file as found

    return str(found() or "the configuration")


def _redis_url() -> str:
    from dispatcher.settings import get_settings

    try:
        return get_settings().redis_url
    except Exception:  # the settings themselves may be what is broken
        return os.environ.get("CONVDISP_REDIS_URL", "the configured redis_url")


def env_source(loc: Sequence[object]) -> str | None:
    """The `CONVDISP_*` variable that set the field at `loc`, if one did: the nested
    variable itself (`CONVDISP_LINKEDIN__RATE_PER_MIN`) or a JSON one holding the field
    (`CONVDISP_DESTINATIONS`)."""
    environ = {name.upper(): value for name, value in os.environ.items()}
    for depth in range(len(loc), 0, -1):
        name = _ENV_PREFIX + "__".join(str(part) for part in loc[:depth]).upper()
        if name in environ and (depth == len(loc) or _holds(environ[name], loc[depth:])):
            return name
    return None


def _holds(text: str, loc: Sequence[object]) -> bool:
    """Whether the JSON `text` has a value at the path `loc`."""
    try:
        value = json.loads(text)
        for part in loc:
            value = value[part if isinstance(value, list) else str(part)]
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    return True


def _invalid(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(masked(str(part)) for part in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    # A check of the whole settings has no location: the field its message starts with
    # (`routes[0]: ...`, `redis_cluster needs ...`) is the one a variable may have set.
    named = re.match(r"(?:Value error, )?([a-z_]+)", first["msg"])
    loc = first["loc"] or ([named.group(1)] if named else [])
    source = (env_source(loc) or config_file()) if exc.title == "Settings" else exc.title
    return f"{source}: {where}: {first['msg']}{more}"


def _unreadable_env(exc: SettingsError) -> str | None:
    """`error parsing value for field "destinations" from source "EnvSettingsSource"`: a
    variable that is not JSON. Its value is never shown (it may hold a token)."""
    found = re.search(r'field "(\w+)" from source "EnvSettingsSource"', str(exc))
    if found is None:
        return None
    name = env_source([found.group(1)]) or _ENV_PREFIX + found.group(1).upper()
    return f"{name}: not valid JSON ({exc.__cause__ or exc})"


def _not_utf8() -> str | None:
    path = Path(config_file())
    try:
        path.read_bytes().decode()
    except UnicodeDecodeError as exc:
        return f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files are UTF-8"
    except OSError:
        return None
    return None


def _from_redis(exc: BaseException) -> bool:
    """Whether `exc` was raised inside redis-py (which raises ValueError for a bad URL)."""
    tb, package = exc.__traceback__, os.path.dirname(redis.__file__)
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(package):
            return True
        tb = tb.tb_next
    return False


_UNREADABLE = (tomllib.TOMLDecodeError, pydantic.ValidationError, SettingsError, UnicodeDecodeError)


def user_error(exc: BaseException) -> str | None:
    """A one-line message for an error the user can fix, or None (a bug: show the traceback)."""
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"{config_file()}: not valid TOML: {exc}"
    if isinstance(exc, pydantic.ValidationError):
        return _invalid(exc)
    if isinstance(exc, SettingsError):
        return _unreadable_env(exc)
    if isinstance(exc, UnicodeDecodeError):
        return _not_utf8()
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        url = _redis_url()
        return f"Redis at {redacted(url)} is unreachable ({exc}); give --redis-url or start it"
    if isinstance(exc, redis.RedisError):  # e.g. a database number the server does not have
        return f"Redis at {redacted(_redis_url())} refused: {redacted(str(exc))}"
    if isinstance(exc, DispatcherError):
        cause = exc.__cause__
        if isinstance(cause, (redis.ConnectionError, redis.TimeoutError, *_UNREADABLE)):
            return user_error(cause)  # (settings that could not be read: blamed on a variable)
        return redacted(str(exc))
    if _from_redis(exc) and (
        isinstance(exc, ValueError)  # a scheme or port redis-py cannot read
        or (isinstance(exc, TypeError) and "unexpected keyword" in str(exc))  # ?bogus=1
    ):
        return f"redis_url {redacted(_redis_url())} cannot be used: {redacted(str(exc))}"
    if isinstance(exc, FileNotFoundError | PermissionError):
        return f"{exc.filename}: {exc.strerror}"
    return None
