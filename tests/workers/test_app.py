"""The Celery app's broker-dependent settings (RabbitMQ itself is not on this machine)."""

from __future__ import annotations

from dispatcher.settings import PLATFORMS
from workers.app import queues, transport_options


def test_on_rabbitmq_the_platform_queues_are_quorum_queues_with_confirmed_publishes() -> None:
    declared = {q.name: q.queue_arguments for q in queues("amqp://user:pw@rabbit:5672//")}
    assert {f"convdispatch.{p}" for p in PLATFORMS} <= set(declared)
    assert set(map(str, declared.values())) == {"{'x-queue-type': 'quorum'}"}
    assert transport_options("amqps://rabbit//") == {"confirm_publish": True}


def test_on_redis_the_queues_are_plain_and_tasks_come_back_after_an_hour() -> None:
    assert all(q.queue_arguments is None for q in queues("redis://broker:6379/0"))
    assert transport_options("redis://broker:6379/0") == {"visibility_timeout": 3600}
