"""The Celery app: one queue per platform, late acks, and a scheduler in every worker.

Start a platform's workers with
    celery -A workers.app worker -Q convdispatch.linkedin
No beat is needed: every worker runs a scheduler thread for the queues it consumes
(workers/scheduler.py).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import Celery, bootsteps, signals
from kombu import Queue

from dispatcher.settings import PLATFORMS, get_settings
from workers import scheduler

log = logging.getLogger(__name__)
# httpx logs every request at INFO ("HTTP Request: POST ..."): a line per platform call,
# thousands a minute with many destinations. Drains report their calls in their results.
# httpcore logs headers at DEBUG (an Authorization header among them): never below WARNING.
for noisy in ("httpx", "httpcore"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
settings = get_settings()
# A drain allocates ~3 containers per event (a 5,000-entry read is 15,000), most of them
# alive until the batch is settled: at CPython's default gen-0 threshold (700) the collector
# ran ~20 times per batch and rescanned Celery's own heap each time. Frozen startup heap and
# a higher threshold: 31 % less worker CPU per event (docs/architecture.md, "Worker CPU").
GC_THRESHOLD = (20_000, 20, 20)


def queues(broker_url: str) -> list[Queue]:
    """The platform queues (and the default one). On RabbitMQ they are quorum queues, as
    Celery recommends: replicated, and safe with late acknowledgement."""
    amqp = broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))
    arguments = {"x-queue-type": "quorum"} if amqp else None
    names = [settings.queue(p) for p in PLATFORMS] + ["convdispatch.default"]
    return [Queue(name, queue_arguments=arguments) for name in names]


def transport_options(broker_url: str) -> dict[str, Any]:
    """Redis: redeliver a task unacknowledged for an hour; RabbitMQ: confirmed publishes."""
    if broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return {"confirm_publish": True}
    return {"visibility_timeout": 3600}


app = Celery("convdispatch", broker=settings.broker, include=["workers.tasks"])
app.conf.update(
    # A task is acknowledged only after it ran; a worker that dies mid-task hands it back.
    # Running a drain twice is harmless: the lease makes the second one `busy` or a no-op.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_time_limit=settings.task_time_limit_s,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    # Flower needs events; tasks carry only destination ids, so they are safe to show.
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_default_queue="convdispatch.default",
    # Declared so Flower's Broker page lists every platform queue (with its length) even
    # before a worker of that platform has reported its queues.
    task_queues=queues(settings.broker),
    task_create_missing_queues=True,
    broker_connection_retry_on_startup=True,
    broker_connection_retry=True,
    broker_connection_max_retries=None,
    broker_transport_options=transport_options(settings.broker),
)


class SchedulerStep(bootsteps.StartStopStep):
    """Runs this worker's scheduler thread while the worker runs (main process only),
    started once the pool has forked its first children."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.scheduler: scheduler.Scheduler | None = None

    def start(self, worker: Any) -> None:
        queues = list(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        _pause_unservable([q.rsplit(".", 1)[-1] for q in queues])
        self.scheduler = scheduler.for_worker(worker.app, settings, queues)
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self, worker: Any) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()


def _pause_unservable(platforms: list[str]) -> None:
    """The offline part of `convdispatch check`, at start: a destination without its
    credentials is paused with the reason (visible in `status`), not failed batch by batch."""
    from dispatcher import Control, Dispatcher
    from dispatcher.check import credential_findings

    problems = [f for f in credential_findings(settings, platforms) if f.level == "error"]
    if not problems:
        return
    with Dispatcher(settings) as producer:
        for finding in problems:
            name = finding.subject.removeprefix("destination ")
            log.error("destination %s cannot be served: %s", name, finding.message)
            try:
                Control(producer).pause_unservable(name, finding.message)
            except Exception:  # Redis down at start: the drain will pause it the same way
                log.exception("could not pause %s", name)


app.steps["worker"].add(SchedulerStep)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    if settings.log_format == "json":
        from workers.logs import use_json

        use_json(logger)


@signals.worker_process_init.connect  # a prefork pool process, before its first task
@signals.worker_ready.connect  # the main process (its scheduler; drains with threads/solo)
def _tune_gc(**_: Any) -> None:
    gc.freeze()  # what is alive now (Celery, kombu, settings) is never scanned again
    gc.set_threshold(*GC_THRESHOLD)
