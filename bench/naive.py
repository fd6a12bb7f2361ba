"""The design the product replaces: one Celery task per event, one HTTP call per event.

Used only by the benchmark, as the baseline for the end-to-end figure.
"""

from __future__ import annotations

import os

import httpx
from celery import Celery

from dispatcher.settings import LINKEDIN_VERSION

app = Celery("naive", broker=os.environ.get("CONVDISP_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True)
_client: httpx.Client | None = None


@app.task(name="naive.send")
def send(event_json: str) -> int:
    """POST one event (LinkedIn single create) to the sandbox."""
    global _client
    if _client is None:
        _client = httpx.Client(timeout=30)
    response = _client.post(
        os.environ["BENCH_LINKEDIN_URL"] + "/rest/conversionEvents",
        content=event_json,
        headers={
            "Authorization": "Bearer bench-token",
            "LinkedIn-Version": os.environ.get("BENCH_LINKEDIN_VERSION", LINKEDIN_VERSION),
            "X-Restli-Protocol-Version": "2.0.0",
            "Content-Type": "application/json",
        },
    )
    return response.status_code
