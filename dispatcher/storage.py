"""Redis connections, the Lua scripts shipped beside the code, and error translation."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from dispatcher import keys
from dispatcher.errors import StorageError

if TYPE_CHECKING:
    from dispatcher.settings import Settings


class Packer:
    """Packs a command for a synchronous connection. A command of only bytes, str and int
    arguments (the writer's: 15,000 a chunk) goes to `hiredis.pack_command` as it is;
    redis-py's own packer runs a Python encode step per argument first (0.9 → 0.45 µs for
    the three arguments of a stored event). Anything else is packed by redis-py."""

    PLAIN = frozenset((bytes, str, int))

    def __init__(self) -> None:
        connection = cast(Any, redis.Connection)()  # never connected: its packer only
        self._redis_py: Callable[..., list[bytes]] = connection.pack_command

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        if type(first) is str and " " not in first and self.PLAIN.issuperset(map(type, args)):
            return [hiredis.pack_command(args)]
        return self._redis_py(*args)


_OPTIONS: dict[str, Any] = {"socket_timeout": 30, "health_check_interval": 30}
_SYNC = {"command_packer": Packer()}  # a synchronous single-node client's
# What tells a client to replace itself (`reopen_store`): a lost connection, or a cluster
# client that found no node to ask.
LOST = (redis.ConnectionError, redis.exceptions.RedisClusterException)


def connect(url: str) -> redis.Redis:
    """A synchronous client; responses stay bytes so payloads are never re-encoded."""
    return redis.Redis.from_url(url, **_OPTIONS, **_SYNC)


def aconnect(url: str) -> redis.asyncio.Redis:
    """The asyncio twin of `connect`."""
    return redis.asyncio.Redis.from_url(url, **_OPTIONS)


def open_store(settings: Settings, **options: Any) -> redis.Redis:
    """The event store's client as `settings` name it: a single node, or a Redis Cluster
    (one or more of its nodes in `redis_url`: `redis://h1:7000,h2:7000`), and this
    process's key layout to match. `options` override the connection's (timeouts)."""
    keys.configure(settings.keyspace_shards if settings.redis_cluster else None)
    options = {**_OPTIONS, **options}
    if settings.redis_cluster:
        nodes = _every_node(settings.redis_url, options)
        return _cluster(settings.redis_url, nodes, options)
    return redis.Redis.from_url(settings.redis_url, **options, **_SYNC)


def reopen_store(settings: Settings, old: redis.Redis, **options: Any) -> redis.Redis:
    """A new client in place of `old`, after connection errors. redis-py's cluster client
    can stay routed to a master that died even once its replica took over, while a new
    one asks the live nodes for the layout: it starts from every node `old` knew (the
    node in `redis_url` may be the one that died)."""
    if not clustered(old):
        return old  # a single-node client reconnects by itself
    node = cast(Any, redis.cluster.ClusterNode)
    nodes = [node(n.host, n.port) for n in cast(Any, old).get_nodes()]
    new = _cluster(settings.redis_url, nodes, {**_OPTIONS, **options})  # raises if none answers
    old.close()
    return new


def _cluster(url: str, nodes: list[Any], options: dict[str, Any]) -> redis.Redis:
    # A cluster client has the same command methods; typed as one for its callers.
    cluster = redis.cluster.RedisCluster(url=_seeds(url)[0], **_fixed(nodes), **options)
    return cast(redis.Redis, cluster)


def _fixed(nodes: list[Any]) -> dict[str, Any]:
    """Startup nodes that redis-py keeps (see `_every_node`)."""
    return {"startup_nodes": nodes, "dynamic_startup_nodes": False}


def aopen_store(settings: Settings) -> redis.asyncio.Redis:
    """The asyncio twin of `open_store`."""
    keys.configure(settings.keyspace_shards if settings.redis_cluster else None)
    if settings.redis_cluster:
        node = cast(Any, redis.asyncio.cluster.ClusterNode)
        found = _every_node(settings.redis_url, _OPTIONS)
        ours = _fixed([node(n.host, n.port) for n in found])
        cluster = redis.asyncio.cluster.RedisCluster.from_url(
            _seeds(settings.redis_url)[0], **ours, **_OPTIONS
        )
        return cast(redis.asyncio.Redis, cluster)
    return aconnect(settings.redis_url)


def _every_node(url: str, options: dict[str, Any]) -> list[Any]:
    """Every node of the cluster `url` names, to be fixed startup nodes: redis-py forgets a
    node that failed, and with the default (dynamic) startup nodes a client whose first
    node died stayed stuck on it after the failover."""
    node = cast(Any, redis.cluster.ClusterNode)
    failed: Exception | None = None
    for seed in _seeds(url):  # the first that answers: the others may be down
        try:
            with redis.cluster.RedisCluster.from_url(seed, **options) as probe:
                return [node(n.host, n.port) for n in probe.get_nodes()]
        except (redis.RedisError, *LOST, OSError) as exc:
            failed = exc
    assert failed is not None
    raise failed


def readable(url: str, cluster: bool) -> bool:
    """Whether redis-py can read `url` (it does not connect here). A cluster's URL may list
    several nodes and hold the cluster client's own options: each node's URL is parsed."""
    try:
        for seed in _seeds(url) if cluster else [url]:
            pool = redis.ConnectionPool.from_url(seed)
            if not cluster:
                pool.make_connection()
    except (ValueError, TypeError, redis.RedisError):  # the message may quote a password
        return False
    return True


def _seeds(url: str) -> list[str]:
    """One URL per node of a `redis://[auth@]h1:p1,h2:p2[/db]` list (one for a plain URL)."""
    parts = urlsplit(url)
    auth, at, hosts = parts.netloc.rpartition("@")
    return [urlunsplit(parts._replace(netloc=auth + at + host)) for host in hosts.split(",")]


def clustered(client: Any) -> bool:
    """Whether `client` talks to a Redis Cluster."""
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def memory(client: redis.Redis) -> tuple[int, int]:
    """(used, maxmemory) of the fullest node (a cluster's writes go to every primary)."""
    if not clustered(client):
        return _memory(client.info("memory"))
    nodes = client.info("memory", target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    return _fullest(nodes.values())


async def amemory(client: redis.asyncio.Redis) -> tuple[int, int]:
    """The asyncio twin of `memory`."""
    if not clustered(client):
        return _memory(await client.info("memory"))
    nodes = await client.info("memory", target_nodes=redis.asyncio.cluster.RedisCluster.PRIMARIES)
    return _fullest(nodes.values())


def _memory(info: Any) -> tuple[int, int]:
    return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))


def _fullest(infos: Any) -> tuple[int, int]:
    readings = [_memory(info) for info in infos]
    return max(readings, key=lambda r: r[0] / r[1] if r[1] else 0.0, default=(0, 0))


@cache
def lua(package: str, name: str) -> str:
    """The text of a Lua script shipped as package data next to its Python user."""
    return resources.files(package).joinpath(name).read_text()


@cache
def _sha(package: str, name: str) -> str:
    return hashlib.sha1(lua(package, name).encode(), usedforsecurity=False).hexdigest()


Call = tuple[Sequence[Any], Sequence[Any]]  # one script call's keys and arguments


def run(client: redis.Redis, package: str, name: str, keys: Sequence[Any], *args: Any) -> Any:
    """Run a shipped script by its SHA-1 (EVALSHA): its text goes to Redis only when Redis
    does not know it yet (first use, or a restart), and then by EVAL, which also loads it."""
    try:
        return client.evalsha(_sha(package, name), len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return client.eval(lua(package, name), len(keys), *keys, *args)


def run_all(client: redis.Redis, package: str, name: str, calls: Sequence[Call]) -> list[Any]:
    """`run` for many calls of one script in one pipelined round trip (non-transactional);
    each reply or error in call order. A call answered NOSCRIPT did not run: it runs again
    by EVAL."""
    pipe = _pipeline(client, package, name, calls, by_sha=True)
    replies = list(pipe.execute(raise_on_error=False))
    missing = _noscript(replies)
    if missing:
        again = _pipeline(client, package, name, [calls[i] for i in missing], by_sha=False)
        _splice(replies, missing, again.execute(raise_on_error=False))
    return replies


async def arun_all(
    client: redis.asyncio.Redis, package: str, name: str, calls: Sequence[Call]
) -> list[Any]:
    """The asyncio twin of `run_all`."""
    pipe = _pipeline(client, package, name, calls, by_sha=True)
    replies = list(await pipe.execute(raise_on_error=False))
    missing = _noscript(replies)
    if missing:
        again = _pipeline(client, package, name, [calls[i] for i in missing], by_sha=False)
        _splice(replies, missing, await again.execute(raise_on_error=False))
    return replies


def _pipeline(client: Any, package: str, name: str, calls: Sequence[Call], by_sha: bool) -> Any:
    """A pipeline (sync or asyncio) with each call queued by EVALSHA, or by EVAL. Queued
    as raw commands: a cluster pipeline refuses its `evalsha` method, but routes the
    command by its keys like any other."""
    pipe = client.pipeline(transaction=False)
    command, script = ("EVALSHA", _sha(package, name)) if by_sha else ("EVAL", lua(package, name))
    for names, args in calls:
        pipe.execute_command(command, script, len(names), *names, *args)
    return pipe


def _noscript(replies: list[Any]) -> list[int]:
    return [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]


def _splice(replies: list[Any], at: list[int], again: list[Any]) -> None:
    for i, reply in zip(at, again, strict=True):
        replies[i] = reply


@contextmanager
def translate_redis_errors() -> Iterator[None]:
    """Turn any redis-py exception into `StorageError` (the one boundary that does so)."""
    try:
        yield
    except (redis.RedisError, *LOST) as exc:
        raise StorageError(f"redis: {type(exc).__name__}: {exc}") from exc
