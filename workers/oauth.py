"""OAuth access tokens shared by every worker: refreshed before they expire and once on a 401.

One grant (client id + refresh token) has one record in Redis (`keys.oauth`): the current
access token encrypted with a key derived from the client secret (so Redis, its AOF and
MONITOR never hold a usable token), its expiry and a refresh count. One process refreshes
at a time (`keys.oauth_lock`); the others wait for the new token instead of refreshing
too. A refused refresh raises `ConfigurationError` with LinkedIn's words, which pauses the
destination; the paused re-check calls `revive`, which refreshes again.

LinkedIn's refresh token itself lives 365 days from the member's authorization and no
refresh extends it: each refresh answer says how long it has left, which the record keeps
(`keys.OAUTH_REFRESH_EXPIRES_AT`, read by `convdispatch status` and the metrics). Within
`refresh_token_warn_days` of its end every worker using it warns once a day; once it has
ended, the refused refresh's pause reason says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import httpx
import redis
from cryptography.fernet import Fernet, InvalidToken
from redis.typing import EncodableT, FieldT

from dispatcher import keys
from dispatcher.destination import without_secrets
from dispatcher.errors import ConfigurationError
from dispatcher.settings import DAY_S, Destination, LinkedInSettings, Settings

log = logging.getLogger(__name__)
LOCK_MS = 30_000  # a refresher that dies holding the lock blocks the others this long at most
WAIT_STEP_S = 0.05


class TokenStore:
    """The access tokens of this process's OAuth destinations (thread-safe)."""

    def __init__(
        self,
        client: redis.Redis,
        http: httpx.Client,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.redis, self.http, self.settings = client, http, settings
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}  # grant -> (token, refresh at)
        self._expires: dict[str, float] = {}  # grant -> when its refresh token ends (epoch s)
        self._next_warning: dict[str, float] = {}  # grant -> when to warn of that again

    def bind(self, destination: Destination) -> Destination:
        """`destination`, whose `secret()` now comes from this store if it uses OAuth."""
        if destination.oauth is None:
            return destination
        return destination.with_token_source(lambda: self.current(destination))

    def current(self, destination: Destination) -> str:
        """A usable access token, refreshed first if it is close to expiring."""
        grant = destination.fingerprint()
        cached = self._cache.get(grant)
        if grant in self._expires:
            self._warn_of_expiry(destination, grant)
        if cached is not None and self.clock() < cached[1]:
            return cached[0]
        with self._lock:
            stored = self._read(destination, grant)
            if stored is not None and self.clock() < stored[1]:
                self._cache[grant] = stored
                return stored[0]
            if stored is None and destination.static_token() is not None:
                token = cast(str, destination.static_token())  # used until LinkedIn refuses it
                self._cache[grant] = (token, float("inf"))
                return token
            return self._refresh(destination, grant, stale=stored[0] if stored else None)

    def refused(self, destination: Destination, token: str) -> str:
        """LinkedIn answered 401 to `token`: the token to try once more (a refreshed one)."""
        grant = destination.fingerprint()
        with self._lock:
            self._cache.pop(grant, None)
            stored = self._read(destination, grant)
            if stored is not None and stored[0] != token:  # another worker refreshed already
                self._cache[grant] = stored
                return stored[0]
            return self._refresh(destination, grant, stale=token)

    def revive(self, destination: Destination) -> None:
        """A paused destination's re-check: refresh now (raises if that still fails)."""
        grant = destination.fingerprint()
        with self._lock:
            self._cache.pop(grant, None)
            stored = self._read(destination, grant)
            self._refresh(destination, grant, stale=stored[0] if stored else "")

    def refreshes(self, destination: Destination) -> int:
        """How many refreshes every process together made for this grant."""
        key = keys.oauth(destination.platform, destination.fingerprint())
        return int(cast(bytes | None, self.redis.hget(key, "refreshes")) or 0)

    # -- internals ------------------------------------------------------------------------

    def _fernet(self, destination: Destination) -> Fernet:
        assert destination.oauth is not None
        _, secret, _ = destination.oauth.read()
        digest = hashlib.sha256(b"convdispatch-oauth-store:" + secret.encode()).digest()
        return Fernet(base64.urlsafe_b64encode(digest))

    def _read(self, destination: Destination, grant: str) -> tuple[str, float] | None:
        """The stored token and when to refresh it, or None (none stored, or unreadable)."""
        key = keys.oauth(destination.platform, grant)
        token, refresh_at, expires = cast(
            list[bytes | None],
            self.redis.hmget(key, "token", "refresh_at", keys.OAUTH_REFRESH_EXPIRES_AT),
        )
        if expires:
            self._expires[grant] = float(expires)
        if token is None:
            return None
        try:
            plain = self._fernet(destination).decrypt(token).decode()
        except InvalidToken:  # the client secret changed: the stored token is useless
            return None
        return plain, float(refresh_at or 0)

    def _refresh(self, destination: Destination, grant: str, stale: str | None) -> str:
        """Refresh, or wait for the process that is refreshing; the new token."""
        lock = keys.oauth_lock(destination.platform, grant)
        holder = f"{id(self)}-{threading.get_ident()}"
        deadline = self.clock() + LOCK_MS / 1000
        while not self.redis.set(lock, holder, nx=True, px=LOCK_MS):
            stored = self._read(destination, grant)
            if stored is not None and stored[0] != stale and self.clock() < stored[1]:
                self._cache[grant] = stored
                return stored[0]
            if self.clock() > deadline:
                raise ConfigurationError("OAuth refresh: another worker's refresh never finished")
            self.sleep(WAIT_STEP_S)
        try:
            stored = self._read(destination, grant)  # it may have changed before the lock
            if stored is not None and stored[0] != stale and self.clock() < stored[1]:
                self._cache[grant] = stored
                return stored[0]
            try:
                token, refresh_at, expires_at = self._call(destination)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{exc}{self._ended(destination, grant)}") from None
            key = keys.oauth(destination.platform, grant)
            sealed = self._fernet(destination).encrypt(token.encode())
            record: dict[FieldT, EncodableT] = {
                "token": sealed, "refresh_at": refresh_at, "error": ""
            }  # fmt: skip
            if expires_at is not None:
                record[keys.OAUTH_REFRESH_EXPIRES_AT] = self._expires[grant] = expires_at
            pipe = self.redis.pipeline()
            pipe.hset(key, mapping=record)
            pipe.hincrby(key, "refreshes", 1)
            pipe.execute()
            self._cache[grant] = (token, refresh_at)
            if expires_at is not None:
                self._warn_of_expiry(destination, grant)
            return token
        finally:
            if self.redis.get(lock) == holder.encode():
                self.redis.delete(lock)

    def _warn_of_expiry(self, destination: Destination, grant: str) -> None:
        """Warn (once a day) when the grant's refresh token ends within the warning time."""
        now = self.clock()
        if now < self._next_warning.get(grant, 0.0):
            return
        table = self.settings.platform(destination.platform)
        warn_s = float(getattr(table, "refresh_token_warn_days", 30)) * DAY_S
        left_s = self._expires[grant] - now
        if left_s > warn_s:  # look again when the warning time begins (or in a day)
            self._next_warning[grant] = now + min(DAY_S, left_s - warn_s)
            return
        self._next_warning[grant] = now + DAY_S
        assert destination.oauth is not None
        log.warning(
            "the LinkedIn refresh token in $%s %s: have the member authorize the app again "
            "and set the new refresh token, or delivery pauses when it ends",
            destination.oauth.refresh_token_env,
            expiry_words(self._expires[grant], now),
        )

    def _ended(self, destination: Destination, grant: str) -> str:
        """What a refused refresh's reason adds when the refresh token is known to have ended."""
        expires_at = self._expires.get(grant)
        if expires_at is None or expires_at > self.clock():
            return ""
        assert destination.oauth is not None
        return (
            f"; the refresh token in ${destination.oauth.refresh_token_env} "
            f"{expiry_words(expires_at, self.clock())}: the member must authorize the app again"
        )

    def _call(self, destination: Destination) -> tuple[str, float, float | None]:
        """One refresh at the platform's token endpoint: the token, when to refresh it, and
        when the refresh token itself ends (None if the answer does not say)."""
        assert destination.oauth is not None
        table = self.settings.platform(destination.platform)
        assert isinstance(table, LinkedInSettings)
        client_id, client_secret, refresh_token = destination.oauth.read()
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
        }
        try:
            response = self.http.post(table.oauth_url, data=form, timeout=table.timeout_s)
        except httpx.HTTPError as exc:
            raise ConfigurationError(f"OAuth refresh failed: {type(exc).__name__}") from None
        body = _json(response.content)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if response.status_code != 200 or not isinstance(token, str) or not token:
            # The endpoint may echo the form, or answer a new token with an odd status.
            secrets = (refresh_token, client_secret, token if isinstance(token, str) else "")
            shown = without_secrets(response.content, secrets)
            told = _json(shown)
            said = ": ".join(
                str(told[k]) for k in ("error", "error_description") if told.get(k)
            ) or shown[:200].decode(errors="replace")
            raise ConfigurationError(f"OAuth refresh refused ({response.status_code}): {said}")
        life_s = float(lifetime) if isinstance(lifetime, int | float) else 3600.0
        margin_s = min(table.refresh_margin_s, life_s / 2)
        left = _seconds(body.get("refresh_token_expires_in"))
        expires_at = None if left is None else self.clock() + left
        return token, self.clock() + life_s - margin_s, expires_at


def expiry_words(expires_at: float, now: float) -> str:
    """`expires in 12 days (2027-01-05)` or `expired on 2027-01-05` (UTC dates)."""
    day = time.strftime("%Y-%m-%d", time.gmtime(expires_at))
    if expires_at <= now:
        return f"expired on {day}"
    days = round((expires_at - now) / DAY_S)
    return f"expires in {days} day{'' if days == 1 else 's'} ({day})"


def _seconds(value: object) -> float | None:
    """A number of seconds as a token endpoint gives one, or None (a string, a bool, NaN)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e10:
        return float(value)
    return None


def _json(content: bytes) -> dict[str, object]:
    try:
        body = json.loads(content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
