"""Prometheus metrics, read from Redis at scrape time.

The counters live in each destination's state hash (written by whichever worker did
the work), so one exporter shows the whole fleet and no multiprocess bookkeeping is
needed: `convdispatch metrics --port 9108`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dispatcher import keys
from dispatcher.settings import PLATFORMS, Settings

COUNTERS = {
    "delivered": "Events the platform accepted.",
    "dead": "Events dead-lettered (refused, expired or out of retries).",
    "retried": "Events whose batch was retried after throttling, an outage or a timeout.",
    "warnings": "Warnings the platform returned with accepted events.",
}


class RedisCollector(Collector):
    """Collects every destination's state from Redis on each scrape."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings, self.client = settings, client

    def collect(self) -> Iterator[Metric]:
        labels = ["destination", "platform"]
        counters = {
            name: CounterMetricFamily(f"convdispatch_events_{name}", text, labels=labels)
            for name, text in COUNTERS.items()
        }
        backlog = GaugeMetricFamily("convdispatch_backlog", "Events waiting.", labels=labels)
        paused = GaugeMetricFamily("convdispatch_paused", "1 if paused.", labels=labels)
        for name, dest in self.settings.destinations.items():
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(keys.stream(name))
            pipe.hgetall(keys.state(name))
            length, raw = pipe.execute()
            state = {k.decode(): v for k, v in cast(dict[bytes, bytes], raw).items()}
            for field, family in counters.items():
                family.add_metric([name, dest.platform], float(state.get(field, 0)))
            backlog.add_metric([name, dest.platform], float(length))
            paused.add_metric([name, dest.platform], 1.0 if state.get("paused") else 0.0)
        yield from counters.values()
        yield backlog
        yield paused
        dead = GaugeMetricFamily(
            "convdispatch_deadletters", "Dead letters held per platform.", labels=["platform"]
        )
        jobs = GaugeMetricFamily(
            "convdispatch_open_jobs", "Platform jobs not finished yet.", labels=["platform"]
        )
        for platform in PLATFORMS:
            dead.add_metric([platform], float(self.client.xlen(keys.deadletters(platform))))
            jobs.add_metric([platform], float(self.client.zcard(keys.open_jobs(platform))))
        yield dead
        yield jobs
        orphaned = GaugeMetricFamily(
            "convdispatch_orphaned_backlog",
            "Events waiting for a destination that is no longer configured.",
            labels=["destination"],
        )
        names = sorted(n.decode() for n in cast(set[bytes], self.client.smembers(keys.orphans())))
        names = [n for n in names if n not in self.settings.destinations]
        if names:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.xlen(keys.stream(name))
            for name, length in zip(names, pipe.execute(), strict=True):
                orphaned.add_metric([name], float(length))
        yield orphaned


def registry(settings: Settings, client: redis.Redis) -> CollectorRegistry:
    """A registry holding only the dispatcher's metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RedisCollector(settings, client))
    return reg
