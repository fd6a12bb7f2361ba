"""Prometheus metrics, read from Redis at scrape time.

The counters live in each destination's state hash and the latency histograms in one
hash per platform (written by whichever worker did the work), so one exporter shows the
whole fleet and no multiprocess bookkeeping is needed: `convdispatch metrics --port 9108`.
A scrape is one pipelined Redis round trip, whatever the number of destinations (one
more for the runtime registry's version, one more when orphaned streams exist; on a
Redis Cluster, one per master and one for the clock). With
Redis down a scrape still answers: `convdispatch_up 0`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from dispatcher import keys
from dispatcher.control import grant_record
from dispatcher.registry import Registry
from dispatcher.settings import PLATFORMS, Settings
from dispatcher.storage import clustered

COUNTERS = {
    "delivered": "Events the platform accepted.",
    "dead": "Events dead-lettered (refused, expired or out of retries).",
    "retried": "Events whose batch was retried after throttling, an outage or a timeout.",
    "warnings": "Warnings the platform returned with accepted events.",
}
# Upper bounds (s) of the histogram buckets; settle.lua and the engine use the same ones.
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
DRAIN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def bucket_field(bounds: tuple[float, ...], seconds: float) -> str:
    """The histogram hash field counting `seconds`: the first bound it fits under."""
    for bound in bounds:
        if seconds <= bound:
            return f"le:{bound:g}"
    return "le:+Inf"


class RedisCollector(Collector):
    """Collects every destination's state from Redis on each scrape."""

    def __init__(
        self, settings: Settings, client: redis.Redis, runtime: Registry | None = None
    ) -> None:
        self.settings, self.client, self.runtime = settings, client, runtime

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("convdispatch_up", "1 if the exporter could read Redis.")
        try:
            families = list(self._families())
        except redis.RedisError:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        if self.runtime is not None:  # destinations registered at runtime: one GET more
            self.runtime.sync()
        names = list(self.settings.destinations)
        cluster = clustered(self.client)  # a cluster pipeline takes only commands with keys
        pipe = self.client.pipeline(transaction=False)
        if not cluster:
            pipe.time()  # Redis's clock, as the workers read it
        pipe.smembers(keys.orphans())
        for name in names:
            dest = self.settings.destinations[name]
            pipe.xlen(keys.stream(name))
            pipe.hgetall(keys.state(name))
            pipe.xrange(keys.stream(name), "-", "+", 1)
            pipe.zscore(keys.due(dest.platform, keys.shard(name)), name)
        for platform in PLATFORMS:
            for shard in keys.shards():  # one on a single node
                pipe.xlen(keys.deadletters(platform, shard))
                pipe.zcard(keys.open_jobs(platform, shard))
                pipe.hgetall(keys.delivery_latency(platform, shard))
                pipe.hgetall(keys.drain_latency(platform, shard))
        grants = {n: grant_record(self.settings.destinations[n]) for n in names}
        for grant in filter(None, grants.values()):
            pipe.hget(grant, keys.OAUTH_REFRESH_EXPIRES_AT)
        replies = iter(pipe.execute())
        seconds, micros = self.client.time() if cluster else next(replies)
        now_s = int(seconds) + int(micros) / 1e6
        orphans = sorted(n.decode() for n in cast(set[bytes], next(replies)))
        yield from self._destinations(names, replies, now_s)
        yield from self._platforms(replies)
        yield self._orphans([n for n in orphans if n not in self.settings.destinations])
        yield self._refresh_tokens(grants, replies)

    def _refresh_tokens(self, grants: dict[str, str | None], replies: Iterator[Any]) -> Metric:
        """When each OAuth destination's refresh token ends, where a refresh has said so
        (the first `metrics_max_destinations` of them)."""
        ends = GaugeMetricFamily(
            "convdispatch_oauth_refresh_token_expiry_timestamp_seconds",
            "When the OAuth refresh token ends (the member must authorize again by then).",
            labels=["destination", "platform"],
        )
        shown = 0
        for name, grant in grants.items():
            expires = next(replies) if grant else None
            if expires and shown < self.settings.metrics_max_destinations:
                ends.add_metric([name, self.settings.destinations[name].platform], float(expires))
                shown += 1
        return ends

    def _destinations(
        self, names: list[str], replies: Iterator[Any], now_s: float
    ) -> Iterator[Metric]:
        labels = ["destination", "platform"]
        counters = {
            name: CounterMetricFamily(f"convdispatch_events_{name}", text, labels=labels)
            for name, text in COUNTERS.items()
        }
        gauges = {
            "backlog": GaugeMetricFamily("convdispatch_backlog", "Events waiting.", labels=labels),
            "paused": GaugeMetricFamily("convdispatch_paused", "1 if paused.", labels=labels),
            "oldest": GaugeMetricFamily(
                "convdispatch_oldest_waiting_age_seconds",
                "Age of the oldest waiting event (0 when none waits).", labels=labels,
            ),
            "success": GaugeMetricFamily(
                "convdispatch_last_success_timestamp_seconds",
                "When the platform last accepted events (0: never).", labels=labels,
            ),
            "next": GaugeMetricFamily(
                "convdispatch_next_attempt_timestamp_seconds",
                "When the destination is next due for a drain (0: nothing due).", labels=labels,
            ),
        }  # fmt: skip
        rows = []
        for name in names:
            length, raw, first, due = (next(replies) for _ in range(4))
            state = {k.decode(): v for k, v in cast(dict[bytes, bytes], raw).items()}
            rows.append((name, int(length), state, first, due))
        yield from self._totals(rows, now_s)
        limit = self.settings.metrics_max_destinations
        if len(rows) > limit:  # the busiest and every paused one; the rest is in the totals
            rows.sort(key=lambda r: (not r[2].get("paused"), -r[1], r[0]))
            rows = rows[:limit]
        for name, length, state, first, due in rows:
            platform = self.settings.destinations[name].platform
            key = [name, platform]
            for field, family in counters.items():
                family.add_metric(key, float(state.get(field, 0)))
            oldest_ms = int(first[0][0].split(b"-")[0]) if first else None
            gauges["backlog"].add_metric(key, float(length))
            gauges["paused"].add_metric(key, 1.0 if state.get("paused") else 0.0)
            age = max(0.0, now_s - oldest_ms / 1000) if oldest_ms is not None else 0.0
            gauges["oldest"].add_metric(key, age)
            gauges["success"].add_metric(key, float(state.get("last_success_ms", 0)) / 1000)
            gauges["next"].add_metric(key, float(due or 0) / 1000)
        info = GaugeMetricFamily(
            "convdispatch_destination_info", "1 per destination, with its tenant label.",
            labels=["destination", "platform", "tenant"],
        )  # fmt: skip
        for name, *_ in rows:
            dest = self.settings.destinations[name]
            info.add_metric([name, dest.platform, dest.tenant or ""], 1.0)
        yield from counters.values()
        yield from gauges.values()
        yield info

    def _totals(
        self, rows: list[tuple[str, int, dict[str, bytes], Any, Any]], now_s: float
    ) -> Iterator[Metric]:
        """Per-platform sums over every destination, however many there are."""
        labels = ["platform"]
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "destinations": GaugeMetricFamily(
                "convdispatch_platform_destinations", "Destinations configured.", labels=labels
            ),
            "backlog": GaugeMetricFamily(
                "convdispatch_platform_backlog", "Events waiting, all destinations.", labels=labels
            ),
            "paused": GaugeMetricFamily(
                "convdispatch_platform_paused", "Destinations paused.", labels=labels
            ),
            "oldest": GaugeMetricFamily(
                "convdispatch_platform_oldest_waiting_age_seconds",
                "Age of the oldest waiting event of any destination.", labels=labels,
            ),
            "delivered": CounterMetricFamily(
                "convdispatch_platform_events_delivered", "Events accepted.", labels=labels
            ),
            "dead": CounterMetricFamily(
                "convdispatch_platform_events_dead", "Events dead-lettered.", labels=labels
            ),
        }  # fmt: skip
        sums = {p: dict.fromkeys(families, 0.0) for p in PLATFORMS}
        for name, length, state, first, _ in rows:
            total = sums[self.settings.destinations[name].platform]
            total["destinations"] += 1
            total["backlog"] += length
            total["paused"] += 1 if state.get("paused") else 0
            if first:
                age = now_s - int(first[0][0].split(b"-")[0]) / 1000
                total["oldest"] = max(total["oldest"], age)
            total["delivered"] += float(state.get("delivered", 0))
            total["dead"] += float(state.get("dead", 0))
        for platform, total in sums.items():
            for field, family in families.items():
                family.add_metric([platform], total[field])
        yield from families.values()

    def _platforms(self, replies: Iterator[Any]) -> Iterator[Metric]:
        dead = GaugeMetricFamily(
            "convdispatch_deadletters", "Dead letters held per platform.", labels=["platform"]
        )
        jobs = GaugeMetricFamily(
            "convdispatch_open_jobs", "Platform jobs not finished yet.", labels=["platform"]
        )
        delivery = HistogramMetricFamily(
            "convdispatch_delivery_latency_seconds",
            "From enqueue to the platform's acceptance, per delivered event.",
            labels=["platform"],
        )
        drains = HistogramMetricFamily(
            "convdispatch_drain_seconds", "How long one destination's drain took.",
            labels=["platform"],
        )  # fmt: skip
        for platform in PLATFORMS:
            shards = [[next(replies) for _ in range(4)] for _ in keys.shards()]
            dead.add_metric([platform], float(sum(int(s[0]) for s in shards)))
            jobs.add_metric([platform], float(sum(int(s[1]) for s in shards)))
            _histogram(delivery, platform, DELIVERY_BUCKETS, [s[2] for s in shards])
            _histogram(drains, platform, DRAIN_BUCKETS, [s[3] for s in shards])
        yield from (dead, jobs, delivery, drains)

    def _orphans(self, names: list[str]) -> Metric:
        orphaned = GaugeMetricFamily(
            "convdispatch_orphaned_backlog",
            "Events waiting for a destination that is no longer configured.",
            labels=["destination"],
        )
        if names:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.xlen(keys.stream(name))
            for name, length in zip(names, pipe.execute(), strict=True):
                orphaned.add_metric([name], float(length))
        return orphaned


def _histogram(
    family: HistogramMetricFamily,
    platform: str,
    bounds: tuple[float, ...],
    shards: list[dict[bytes, bytes]],
) -> None:
    counts: dict[str, float] = {}
    for raw in shards:  # the shards' hashes add up
        for k, v in raw.items():
            field = k.decode()
            counts[field] = counts.get(field, 0.0) + float(v)
    cumulative, buckets = 0.0, []
    for bound in [f"{b:g}" for b in bounds] + ["+Inf"]:
        cumulative += counts.get(f"le:{bound}", 0.0)
        buckets.append((bound, cumulative))
    family.add_metric([platform], buckets, counts.get("sum", 0.0))


def registry(
    settings: Settings, client: redis.Redis, runtime: Registry | None = None
) -> CollectorRegistry:
    """A registry holding only the dispatcher's metrics (with `runtime`, also the
    destinations registered at runtime)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RedisCollector(settings, client, runtime))
    return reg
