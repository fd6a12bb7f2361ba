"""The anchor: a plain Celery dispatcher that puts 5,000 events in each task message.

Used only by the benchmark, beside the naive one-task-per-event baseline: the producer
validates and hashes exactly as the product does, then sends each chunk of 5,000 LinkedIn
event JSONs as one task; the task POSTs them as one `BATCH_CREATE` to the same sandbox,
with the headers `workers/adapters/linkedin.py` builds. No durability beyond the broker,
no rate limiter, no per-event verdicts, no retries: what a batch dispatcher costs at least.

    celery -A bench.chunked worker -c 1 --pool prefork
"""

from __future__ import annotations

import os

import httpx
from celery import Celery

from dispatcher.settings import LINKEDIN_VERSION

CHUNK = 5000

app = Celery("chunked", broker=os.environ.get("CONVDISP_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
)
_client: httpx.Client | None = None


@app.task(name="chunked.send")
def send(events: list[str]) -> int:
    """POST up to 5,000 event JSONs as one LinkedIn `BATCH_CREATE` to the sandbox."""
    global _client
    if _client is None:
        _client = httpx.Client(timeout=30)
    body = b'{"elements":[' + ",".join(events).encode() + b"]}"
    response = _client.post(
        os.environ["BENCH_LINKEDIN_URL"] + "/rest/conversionEvents",
        content=body,
        headers={
            "Authorization": "Bearer bench-token",
            "LinkedIn-Version": os.environ.get("BENCH_LINKEDIN_VERSION", LINKEDIN_VERSION),
            "X-Restli-Protocol-Version": "2.0.0",
            "X-RestLi-Method": "BATCH_CREATE",
            "Content-Type": "application/json",
        },
    )
    return response.status_code
