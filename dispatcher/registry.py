"""Destinations and routes managed at runtime, stored in Redis, seen by every process.

    registry = Registry(settings, client)
    registry.add("pin-client-42", {"platform": "pinterest", "token": "...",
                                   "ad_account_id": "549755885175", "tenant": "client-42"})
    registry.add_route(Route(event="purchase", destination="pin-client-42"))

Every producer and worker holds a `Registry` and calls `sync()` before it resolves a
destination; that is one GET of a version counter at most every `registry_refresh_s`, and
a reload only when it changed, so a change reaches every process within about a second
without a restart. The effective destinations are the configuration's, overlaid by the
registry's (a registry entry of the same name wins). Tokens given inline are stored
encrypted with Fernet keys from `CONVDISP_SECRET_KEYS` (comma-separated, the first one
encrypts, any decrypts: add a new key first, `rotate()`, then drop the old one);
`token_env` names are stored as they are.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

import redis
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr, ValidationError

from dispatcher import keys
from dispatcher.destination import destination_id
from dispatcher.errors import ConfigurationError, UnknownDestinationError
from dispatcher.identity import masked
from dispatcher.settings import Destination, Route, Settings, check_destination_id, route_problem
from dispatcher.storage import translate_redis_errors

log = logging.getLogger(__name__)
KEYS_ENV = "CONVDISP_SECRET_KEYS"
Backlog = Literal["drain", "dead-letter", "keep"]


def _fernet() -> MultiFernet | None:
    raw = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if not raw:
        return None
    try:
        return MultiFernet([Fernet(k) for k in raw])
    except ValueError:
        raise ConfigurationError(f"{KEYS_ENV} holds a key that is not a Fernet key") from None


def _first_error(exc: ValidationError, *where: str, empty: str = "") -> str:
    """`path: message` of `exc`'s first error, its path after `where` (`empty` if none)."""
    first = exc.errors()[0]
    path = ".".join(masked(str(part)) for part in (*where, *first["loc"]))
    return f"{path or empty}: {first['msg']}"


def _fields(blob: bytes) -> dict[str, Any]:
    """A stored entry's fields, or a `ConfigurationError` for one that is not a JSON object
    (written by hand, not by this module)."""
    try:
        fields = json.loads(blob)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise ConfigurationError("the stored entry is not a JSON object")
    return fields


def has_open_jobs(client: redis.Redis, platform: str, name: str) -> bool:
    """Whether destination `name` has a platform job (an upload, an import) still open."""
    shard = keys.shard(name)
    job_ids = cast(list[bytes], client.zrange(keys.open_jobs(platform, shard), 0, -1))
    if not job_ids:
        return False
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(platform, job_id.decode(), shard), "destination")
    return name.encode() in pipe.execute()


def new_key() -> str:
    """A fresh key for `CONVDISP_SECRET_KEYS`."""
    return Fernet.generate_key().decode()


class Registry:
    """The runtime registry of one process (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.redis, self.clock = settings, client, clock
        self.declared = dict(settings.destinations)  # from the configuration
        self.declared_routes = list(settings.routes)
        self._version: bytes | None = None
        self._checked = -1e9
        self._lock = threading.Lock()
        # Entries `sync` could not load (a token no key decrypts, an invalid entry): name ->
        # why. They take no events; `check` reports them; `update` with a new token and
        # `remove` still reach them.
        self.skipped: dict[str, str] = {}
        self._bad_routes: set[bytes] = set()

    # -- reading ------------------------------------------------------------------------

    def sync(self, force: bool = False) -> None:
        """Bring `settings.destinations` and `settings.routes` up to date with Redis."""
        now = self.clock()
        if not force and now - self._checked < self.settings.registry_refresh_s:
            return
        with self._lock:
            self._checked = now
            version = cast(bytes | None, self.redis.get(keys.registry_version()))
            if version == self._version and not force:
                return
            pipe = self.redis.pipeline(transaction=True)
            pipe.get(keys.registry_version())
            pipe.hgetall(keys.registry_destinations())
            pipe.hgetall(keys.registry_routes())
            version, raw_dests, raw_routes = pipe.execute()
            destinations, skipped = dict(self.declared), {}
            for key, blob in sorted(cast(dict[bytes, bytes], raw_dests).items()):
                name = key.decode(errors="replace")
                try:
                    if name.encode() != key:
                        raise ConfigurationError("its name is not UTF-8 text")
                    destinations[name] = self._load(_fields(blob))
                except (ConfigurationError, ValueError) as exc:  # one bad entry only
                    skipped[name] = str(exc)
                    if self.skipped.get(name) != str(exc):  # once, not every sync
                        log.error("registry: destination %r is skipped: %s", masked(name), exc)
            routes = list(self.declared_routes)
            declared = {(r.event, r.destination) for r in routes}
            for key, blob in cast(dict[bytes, bytes], raw_routes).items():
                try:
                    route = Route.model_validate_json(blob)
                except ValidationError:  # written by hand, not by `add_route`: one route only
                    if key not in self._bad_routes:
                        shown = masked(key.decode(errors="replace").replace("\x1f", " -> "))
                        log.error("registry: route %r is skipped: not a valid route", shown)
                        self._bad_routes.add(key)
                    continue
                if (route.event, route.destination) not in declared:
                    routes.append(route)
            # Assigned whole, so a reader sees the old view or the new one, never half.
            self.settings.destinations = destinations
            self.settings.routes = [r for r in routes if r.destination in destinations]
            self.skipped = skipped
            self._version = version

    def destination(self, name: str) -> Destination:
        """`name`'s destination; one not known yet is looked up in Redis at once (another
        process may have just registered it), so nobody takes it for a removed one."""
        self.sync()
        try:
            return self.settings.destination(name)
        except UnknownDestinationError:
            self.sync(force=True)
            return self.settings.destination(name)

    def due(self) -> bool:
        """Whether `sync` would look at Redis now (for callers that must not block)."""
        return self.clock() - self._checked >= self.settings.registry_refresh_s

    @translate_redis_errors()
    def entries(self) -> list[tuple[str, Destination, str]]:
        """(name, destination, "config" | "registry") of every effective destination."""
        self.sync(force=True)
        stored = set(cast(list[bytes], self.redis.hkeys(keys.registry_destinations())))
        return [
            (name, dest, "registry" if name.encode() in stored else "config")
            for name, dest in sorted(self.settings.destinations.items())
        ]

    # -- changing ------------------------------------------------------------------------

    @translate_redis_errors()
    def add(
        self, name: str, destination: Destination | Mapping[str, Any], replace: bool = False
    ) -> None:
        """Register a destination (validated as the configuration's are)."""
        destination_id(name)
        dest = self._validated(name, destination)
        blob = json.dumps(self._dump(dest))
        if replace:
            self.redis.hset(keys.registry_destinations(), name, blob)
        elif not self.redis.hsetnx(keys.registry_destinations(), name, blob):
            raise ConfigurationError(f"destination {name!r} is registered already (use update)")
        self._changed()

    @translate_redis_errors()
    def update(self, name: str, **changes: Any) -> Destination:
        """Change fields of a registered (or configured) destination; the new one."""
        destination_id(name)
        self.sync(force=True)
        if name in self.skipped:  # unreadable: what is stored, but a new token must come
            if changes.get("token") is None and changes.get("token_env") is None:
                raise ConfigurationError(
                    f"destination {name!r} cannot be read ({self.skipped[name]}): give it a "
                    "new token or token_env, or remove it"
                )
            fields = self._stored(name)
            fields.pop("token_enc", None)
        else:
            current = self.settings.destination(name)
            fields = current.model_dump(exclude_none=True)
            if current.token is not None:
                fields["token"] = current.token.get_secret_value()
        if "token" in changes or "token_env" in changes:
            fields.pop("token", None)
            fields.pop("token_env", None)
        fields |= {k: v for k, v in changes.items() if v is not None}
        dest = self._validated(name, fields)
        self.redis.hset(keys.registry_destinations(), name, json.dumps(self._dump(dest)))
        self._changed()
        return dest

    @translate_redis_errors()
    def set_enabled(self, name: str, enabled: bool) -> None:
        """Disable (new events refused, delivery paused) or enable a destination."""
        if not isinstance(enabled, bool):
            raise ConfigurationError("enabled must be True or False")
        self.update(name, enabled=enabled)

    @translate_redis_errors()
    def remove(self, name: str, backlog: Literal["drain", "keep"]) -> int:
        """Remove a registered destination; what waits for it is drained first (`drain`:
        new events are refused and the entry goes once the backlog is delivered), or kept
        in Redis as an orphan. Returns the backlog. `Control.remove_destination` can also
        dead-letter it."""
        destination_id(name)
        if backlog not in ("drain", "keep"):
            raise ConfigurationError(
                f"backlog must be drain or keep, not {backlog!r} (dead-letter: "
                "Control.remove_destination)"
            )
        self.sync(force=True)
        if name in self.skipped and backlog == "drain" and self.redis.xlen(keys.stream(name)):
            raise ConfigurationError(
                f"destination {name!r} cannot be read ({self.skipped[name]}), so its backlog "
                "cannot be delivered: remove it with keep or dead-letter, or update its token"
            )
        if name not in self.skipped:
            self.settings.destination(name)
        if name.encode() not in set(
            cast(list[bytes], self.redis.hkeys(keys.registry_destinations()))
        ):
            raise ConfigurationError(
                f"destination {name!r} comes from the configuration: edit it there"
            )
        waiting = int(self.redis.xlen(keys.stream(name)))
        platform = str(self._stored(name).get("platform", ""))
        if backlog == "drain" and (waiting or has_open_jobs(self.redis, platform, name)):
            self.update(name, draining=True)
            return waiting
        self.redis.hdel(keys.registry_destinations(), name)
        self._changed()
        return waiting

    def finish_draining(self, name: str) -> bool:
        """Remove a draining destination whose backlog is empty and whose platform jobs
        have all ended (their tracking needs its credentials); workers call this."""
        if self.redis.xlen(keys.stream(name)):
            return False
        if has_open_jobs(self.redis, str(self._stored(name).get("platform", "")), name):
            return False
        removed = bool(self.redis.hdel(keys.registry_destinations(), name))
        if removed:
            self._changed()
        return removed

    @translate_redis_errors()
    def add_route(self, route: Route | Mapping[str, Any]) -> None:
        """Register a route, checked as a configured one is (`route_problem`).

        Raises:
            UnknownDestinationError: its destination is neither configured nor registered.
            ConfigurationError: the route lacks what its platform needs, or the
                configuration already declares a route of this event to this destination.
        """
        self.sync(force=True)
        try:
            chosen = route if isinstance(route, Route) else Route.model_validate(route)
        except ValidationError as exc:
            raise ConfigurationError(f"route: {_first_error(exc, empty='route')}") from None
        self.settings.destination(chosen.destination)
        problem = route_problem(chosen, self.settings.destinations)
        if problem is not None:
            raise ConfigurationError(problem)
        if any((r.event, r.destination) == (chosen.event, chosen.destination)
               for r in self.declared_routes):  # fmt: skip
            raise ConfigurationError(
                f"the configuration already routes {chosen.event} to {chosen.destination}: "
                "edit it there"
            )
        self.redis.hset(keys.registry_routes(), f"{chosen.event}\x1f{chosen.destination}",
                        chosen.model_dump_json(exclude_none=True))  # fmt: skip
        self._changed()

    @translate_redis_errors()
    def remove_route(self, event: str, destination: str) -> bool:
        """Unregister the route of `event` to `destination`."""
        removed = bool(self.redis.hdel(keys.registry_routes(), f"{event}\x1f{destination}"))
        if removed:
            self._changed()
        return removed

    @translate_redis_errors()
    def rotate(self) -> int:
        """Re-encrypt every stored token with the first key of `CONVDISP_SECRET_KEYS`; all
        or none: a token no key decrypts is a `ConfigurationError` naming its destination,
        and nothing is re-encrypted."""
        fernet = self._require_keys()
        rotated: dict[Any, Any] = {}  # entry name -> JSON, as redis-py types a mapping
        lost: list[str] = []
        for name, blob in cast(
            dict[bytes, bytes], self.redis.hgetall(keys.registry_destinations())
        ).items():
            try:
                stored = _fields(blob)
            except ConfigurationError:  # written by hand: no token of ours to re-encrypt
                continue
            if "token_enc" in stored:
                try:
                    stored["token_enc"] = fernet.rotate(stored["token_enc"].encode()).decode()
                except InvalidToken:
                    lost.append(name.decode())
                rotated[name] = json.dumps(stored)
        if lost:
            raise ConfigurationError(
                f"no key in {KEYS_ENV} decrypts the stored token of {', '.join(sorted(lost))}: "
                "nothing re-encrypted (add the old key, or remove or update those destinations)"
            )
        if rotated:
            self.redis.hset(keys.registry_destinations(), mapping=rotated)
        self._changed()
        return len(rotated)

    # -- internals ------------------------------------------------------------------------

    def _changed(self) -> None:
        self.redis.incr(keys.registry_version())
        self.sync(force=True)

    def _validated(self, name: str, destination: Destination | Mapping[str, Any]) -> Destination:
        try:
            dest = (
                destination
                if isinstance(destination, Destination)
                else Destination.model_validate(destination)
            )
        except ValidationError as exc:
            # The field's path as the configuration file spells it.
            problem = _first_error(exc, "destinations", name)
            raise ConfigurationError(f"destination {masked(name)!r}: {problem}") from None
        try:
            check_destination_id(name)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        return dest

    def _require_keys(self) -> MultiFernet:
        fernet = _fernet()
        if fernet is None:
            raise ConfigurationError(
                f"a token stored in Redis is encrypted: set {KEYS_ENV} (convdispatch "
                f"destinations new-key), or give token_env instead"
            )
        return fernet

    def _dump(self, dest: Destination) -> dict[str, Any]:
        stored = dest.model_dump(exclude_none=True, exclude={"token"})
        if dest.token is not None:
            token = dest.token.get_secret_value().encode()
            stored["token_enc"] = self._require_keys().encrypt(token).decode()
        return stored

    @translate_redis_errors()
    def platform_of(self, name: str) -> str:
        """The platform of `name`, a skipped entry's too (as Redis holds it now)."""
        self.sync(force=True)
        if name in self.skipped:
            return str(self._stored(name).get("platform", ""))
        return self.destination(name).platform

    def _stored(self, name: str) -> dict[str, Any]:
        """What is stored for `name`; nothing (`{}`) for none, or one written by hand that
        is not a JSON object (`update` then needs every field, `remove` still works)."""
        blob = cast(bytes | None, self.redis.hget(keys.registry_destinations(), name))
        try:
            return {} if blob is None else _fields(blob)
        except ConfigurationError:
            return {}

    def _load(self, stored: dict[str, Any]) -> Destination:
        sealed = stored.pop("token_enc", None)
        if sealed is not None:
            try:
                stored["token"] = SecretStr(self._require_keys().decrypt(sealed.encode()).decode())
            except InvalidToken:
                raise ConfigurationError(f"no key in {KEYS_ENV} decrypts a stored token") from None
        return Destination.model_validate(stored)
