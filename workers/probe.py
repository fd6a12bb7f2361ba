"""`convdispatch check --online`: one harmless authenticated call per destination.

LinkedIn: list the ad account's conversion rules (needs `ad_account_id`). Pinterest: one
synthetic event with `?test=true`, which Pinterest validates and does not record. Yandex:
list the counter's uploads. vNative: list the import jobs. Each goes through the delivery
request path (same rate tokens, same OAuth refresh).
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import partial
from urllib.parse import quote

import httpx
import redis

from dispatcher.check import Finding, Level, credentials
from dispatcher.settings import Destination, LinkedInSettings, Settings
from workers.adapters import adapter_for, follows_jobs
from workers.adapters.base import excerpt
from workers.oauth import TokenStore
from workers.request import Failed, NotSent, RequestPath, Target


def online(settings: Settings, client: redis.Redis, http: httpx.Client) -> list[Finding]:
    """One finding per destination from one harmless call."""
    tokens = TokenStore(client, http, settings)
    path = RequestPath(client, http, "check", settings.max_limiter_wait_s, time.sleep, tokens)
    found = []
    for name, configured in sorted(settings.destinations.items()):
        subject = f"destination {name} (online)"
        if credentials(configured) is not None:
            found.append(Finding("error", subject, "not called: credentials are not set"))
            continue
        dest = tokens.bind(configured)
        if dest.platform == "pinterest":  # the probe is a test call: the test budget
            dest = dest.model_copy(update={"test": True})
        table = settings.platform(dest.platform)
        adapter = adapter_for(dest.platform)
        target = Target(name, dest, table, adapter, adapter.limits(dest, table))
        if dest.platform == "linkedin" and dest.ad_account_id is None:
            found.append(Finding("warn", subject, "no harmless call: set ad_account_id"))
            continue
        answer = path.call(target, partial(_probe, target), _same)
        found.append(_judge(subject, answer))
    return found


def _same(response: httpx.Response) -> httpx.Response:
    return response


def _probe(target: Target) -> httpx.Request:
    """The destination's harmless call, built with its current token."""
    dest, table, adapter = target.destination, target.table, target.adapter
    if follows_jobs(adapter):  # Yandex and vNative list their jobs
        return adapter.list_request(dest, table)
    if dest.platform == "pinterest":
        event = {
            "event_name": "page_visit", "action_source": "web", "event_time": int(time.time()),
            "event_id": "convdispatch-check",
            "user_data": {"em": [hashlib.sha256(b"check@convdispatch.invalid").hexdigest()]},
        }  # fmt: skip
        request = adapter.build_request(dest, table, [json.dumps(event).encode()], "check")
        url = request.url.copy_merge_params({"test": "true"})
        return httpx.Request("POST", url, headers=request.headers, content=request.content)
    return _linkedin_probe(dest, table)


def _linkedin_probe(dest: Destination, table: object) -> httpx.Request:
    assert isinstance(table, LinkedInSettings)
    account = quote(f"urn:li:sponsoredAccount:{dest.ad_account_id}", safe="")
    return httpx.Request(
        "GET",
        f"{table.base_url.rstrip('/')}/rest/conversions?q=account&account={account}&count=1",
        headers={
            "Authorization": f"Bearer {dest.secret()}",
            "LinkedIn-Version": table.version,
            "X-Restli-Protocol-Version": "2.0.0",
        },
    )


def _judge(subject: str, answer: httpx.Response | NotSent | Failed) -> Finding:
    if isinstance(answer, NotSent):
        return Finding(
            "warn", subject, f"not called: rate limit, next token in {answer.wait_s:.0f}s"
        )
    if isinstance(answer, Failed):
        return Finding("error", subject, answer.reason)
    status = answer.status_code
    if status < 300:
        return Finding("ok", subject, f"authenticated call answered {status}")
    level: Level = "error" if status in (401, 403, 404, 426) else "warn"
    return Finding(level, subject, f"answered {status}: {excerpt(answer)[:200]}")
