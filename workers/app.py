"""The Celery app: one queue per platform, late acks, and a beat sweep per platform.

Start a platform's workers with
    celery -A workers.app worker -Q convdispatch.linkedin
and the sweep with
    celery -A workers.app beat
"""

from __future__ import annotations

from celery import Celery

from dispatcher.settings import PLATFORMS, get_settings

settings = get_settings()

app = Celery("convdispatch", broker=settings.redis_url, include=["workers.tasks"])
app.conf.update(
    # A task is acknowledged only after it ran; a worker that dies mid-task hands it back.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Shorter than the drain lease, so a lease never outlives the task that holds it.
    task_time_limit=settings.task_time_limit_s,
    task_soft_time_limit=settings.task_time_limit_s * 0.8,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    # Flower needs events; tasks carry only a destination id, so they are safe to show.
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_default_queue="convdispatch.default",
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 3600},
    beat_schedule={
        f"sweep-{platform}": {
            "task": "convdispatch.sweep",
            "schedule": settings.sweep_interval_s,
            "args": (platform,),
            # A sweep that waited longer than a few intervals is stale: drop it.
            "options": {
                "queue": settings.queue(platform),
                "expires": settings.sweep_interval_s * 5,
            },
        }
        for platform in PLATFORMS
    }
    | {
        f"track-{platform}": {
            "task": "convdispatch.track",
            "schedule": min(poll_s, 10.0),
            "args": (platform,),
            "options": {"queue": settings.queue(platform), "expires": min(poll_s, 10.0) * 5},
        }
        for platform in PLATFORMS
        if (poll_s := getattr(settings.platform(platform), "job_poll_interval_s", None))
    },
)
