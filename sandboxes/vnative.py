"""A local vNative (Trackier) conversion import (seed 000; PLATFORMS.md; Trackier v1 docs).

Routes: `POST /advertiser/conversion-import` (answered like the seed's sample), `GET
/jobs/{id}` (pending -> progress -> completed or failed, one step per poll or per
`JOB_STEP_S` since the import, whichever is further; shaped like the docs' sample) and
`GET /jobs` (the key's latest 50 as `{"data": {"jobs": [...]}}`, ours: no sample is
documented). Auth: `X-Api-Key` (or `?apiKey=`, as documented).

Errors `{"success": false, "error": {"code": 13, "message": "Invalid API Key"}}` use the
documented codes and messages; where the code sits is our guess (undocumented).

Control, besides the shared API: `GET`/`POST /_sandbox/vnative/config` sets
`max_conversions` (per call, default 500; unconfirmed), `fail_next_jobs` (the next jobs
end `failed`) and `error_click_ids` (counted as Errors); `GET /_sandbox/vnative/jobs`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import tornado.web

from sandboxes.base import Json, JsonHandler, PlatformHandler, Sandbox, application

MAX_CONVERSIONS = 500  # per call; vNative documents no limit
RATE_LIMIT = 60  # calls per key per minute; undocumented, mirrors the dispatcher's default
_MESSAGES = {5: "Insufficient Permission", 13: "Invalid API Key", 20: "Request Parameter Error"}
_MESSAGES |= {31: "Resource Not Found", 40: "Too Many Request", 50: "System upgrade"}
_MESSAGES |= {51: "Server Internal Error"}
_CODES = {400: 20, 401: 13, 403: 5, 404: 31, 429: 40, 500: 51, 503: 50}
_KIND = {"type": "import", "subType": "job_import_conversion_v2"}


def _error(code: int, detail: str = "") -> Json:
    message = _MESSAGES[code] + (f": {detail}" if detail else "")
    return {"success": False, "error": {"code": code, "message": message}}


JOB_STEP_S = 1.0  # an import moves one state on per second even if nobody polls


def _stamp(at_s: float) -> Json:
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at_s)) + f".{int(at_s % 1 * 1e6):06d}"
    return {"date": date, "timezone_type": 1, "timezone": "+00:00"}


@dataclass
class _ImportJob:
    """One import; its state advances one step each time it is polled."""

    id: str
    token: str
    created_s: float
    events: int
    errors: int  # conversions whose click id the sandbox was told to count as Errors
    failed: bool
    send_postback: bool
    polls: int = 0

    def logs(self) -> list[str]:
        if self.polls < 2:
            return []
        imported = 0 if self.failed else self.events - self.errors
        line = f"Total Processed: {self.events} | Imported: {imported} | Edited: 0 | Errors: "
        return [f"{line}{self.errors}"] + ["Import failed (sandbox fail_next_jobs)"] * self.failed

    def step(self, now_s: float) -> int:
        """0 pending, 1 progress, 2 done: a step per poll or per JOB_STEP_S, the further."""
        return min(2, max(self.polls, int((now_s - self.created_s) / JOB_STEP_S)))

    def summary(self, now_s: float | None = None) -> Json:
        step = self.polls if now_s is None else self.step(now_s)
        status = ("pending", "progress", "failed" if self.failed else "completed")[step]
        named = {"name": "import.json.conversion", "_id": self.id, "status": status}
        return named | _KIND | {"created": _stamp(self.created_s)}


class _Imports:
    """Jobs and switches of one sandbox; only the server's event loop touches them."""

    def __init__(self, max_conversions: int = MAX_CONVERSIONS) -> None:
        self._defaults: Json = {"max_conversions": max_conversions, "fail_next_jobs": 0}
        self._defaults["error_click_ids"] = []
        self._ids = itertools.count(1)
        self.clear()

    def clear(self) -> None:
        self.jobs: dict[str, _ImportJob] = {}
        self.switches: Json = dict(self._defaults)

    def configure(self, changes: Mapping[str, Any]) -> Json:
        for name, value in changes.items():  # all checked before any is set
            ok = name in self._defaults and isinstance(value, type(self._defaults[name]))
            if name == "error_click_ids":
                ok = ok and all(isinstance(click, str) for click in value)
            elif ok:
                ok = type(value) is int and value >= (name == "max_conversions")
            if not ok:
                raise ValueError(f"bad vnative switch {name!r}; known: {sorted(self._defaults)}")
        self.switches.update(changes)
        return dict(self.switches)

    def create(self, token: str, clicks: list[str], postback: bool, now_s: float) -> _ImportJob:
        failed = self.switches["fail_next_jobs"] > 0
        self.switches["fail_next_jobs"] -= failed
        errors = len([click for click in clicks if click in self.switches["error_click_ids"]])
        job_id = f"{int(now_s):08x}{next(self._ids):016x}"  # 24 hex, like vNative's ids
        self.jobs[job_id] = _ImportJob(job_id, token, now_s, len(clicks), errors, failed, postback)
        return self.jobs[job_id]

    def poll(self, token: str, job_id: str, now_s: float) -> _ImportJob | None:
        job = self.jobs.get(job_id)
        if job is None or job.token != token:
            return None
        job.polls = min(max(job.polls + 1, job.step(now_s)), 2)
        return job

    def latest(self, token: str | None = None) -> list[_ImportJob]:
        """The newest jobs first: the key's latest 50, or (None) every job."""
        jobs = [j for j in self.jobs.values() if token is None or j.token == token]
        return sorted(jobs, key=lambda j: j.id, reverse=True)[: 50 if token else None]


def _imports(handler: tornado.web.RequestHandler) -> _Imports:
    return cast(_Imports, handler.settings["vnative_imports"])


def _problems(body: object, max_conversions: int) -> list[str]:
    """What vNative's parameter check (code 20) names; our wording."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    conversions, postback = body.get("conversions"), body.get("send_postback")
    problems = []
    if postback is not None and not isinstance(postback, bool):
        problems.append("send_postback must be a boolean")
    if not isinstance(conversions, list) or not conversions:
        return [*problems, "conversions is required and must be a non-empty array"]
    if len(conversions) > max_conversions:
        return [*problems, f"at most {max_conversions} conversions per call"]
    for i, item in enumerate(conversions):
        if not isinstance(item, dict):
            problems.append(f"conversions[{i}] must be an object")
            continue
        click, dimensions = item.get("click_id"), item.get("custom_dimensions")
        if not isinstance(click, str) or not click.strip():
            problems.append(f"conversions[{i}].click_id is required: a non-empty string")
        if dimensions is not None and not isinstance(dimensions, dict):
            problems.append(f"conversions[{i}].custom_dimensions must be an object")
    return problems[:10]


class _VNative(PlatformHandler):
    id_field = "click_id"

    def read_token(self) -> str:
        key = self.request.headers.get("X-Api-Key") or self.get_query_argument("apiKey", "")
        return (key or "").strip()

    def error_body(self, status: int, reason: str = "") -> Json:
        if status in _CODES:
            return _error(_CODES[status])
        message = "Request uri not found" if status == 501 else f"HTTP {status}"
        return {"success": False, "error": {"message": message}}


class _ConversionImport(_VNative):
    def post(self) -> None:
        try:
            body = json.loads(self.request.body)
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            body = None
        problems = _problems(body, _imports(self).configure({})["max_conversions"])
        if problems:
            self.answer(400, _error(20, "; ".join(problems)))
            return
        conversions, postback = body["conversions"], bool(body.get("send_postback"))
        # The key is read already: keep it out of what the control API shows.
        self.request.headers["X-Api-Key"] = "***"
        self.request.query_arguments.pop("apiKey", None)
        self.sandbox.accept(self.token, self.request, conversions, self.id_field)
        clicks = [c["click_id"] for c in conversions]
        job = _imports(self).create(self.token, clicks, postback, self.sandbox.clock())
        related = {"csvPath": f"{job.id[-13:]}.json", "sendPostback": "1" if postback else "0"}
        answer: Json = {"orgId": hashlib.sha256(self.token.encode()).hexdigest()[:22], **_KIND}
        answer |= {"relatedObject": related, "resource": "Conversion", "resourceId": None}
        answer |= {"state": "pending", "logs": [], "_id": job.id, "live": False}
        answer |= {"created": _stamp(job.created_s), "modified": None, "meta": {}}
        data = {"message": "Job has been queued!!", "job": answer}
        self.answer(200, {"success": True, "data": data})


class _Jobs(_VNative):
    def get(self, job_id: str | None = None) -> None:
        if job_id is None:
            now_s = self.sandbox.clock()
            jobs = [job.summary(now_s) for job in _imports(self).latest(self.token)]
            self.answer(200, {"success": True, "data": {"jobs": jobs}})
            return
        job = _imports(self).poll(self.token, job_id, self.sandbox.clock())
        if job is None:
            self.answer(404, _error(31))
            return
        log: Json = {"object": "import.csv.conversions", "priority": 1}
        log["created"] = _stamp(job.created_s)["date"][:19]
        lines = enumerate(job.logs())
        logs = [log | {"message": m, "_id": f"{job.id[:16]}{i:08x}"} for i, m in lines]
        self.answer(200, {"success": True, "data": {"job": job.summary(), "logs": logs}})


class _Switches(JsonHandler):
    def get(self, name: str) -> None:
        if name != "jobs":
            self.post(name)  # GET config: the switches, unchanged (a GET has no body)
            return
        rows = [
            job.summary() | asdict(job) | {"logs": job.logs()} for job in _imports(self).latest()
        ]
        self.answer(200, [{k: v for k, v in row.items() if k != "token"} for row in rows])

    def post(self, name: str) -> None:
        if name != "config":
            raise tornado.web.HTTPError(404)
        try:
            changes = json.loads(self.request.body or b"{}")
            switches = _imports(self).configure(changes if type(changes) is dict else {"": 0})
        except ValueError as exc:
            self.answer(400, {"status": 400, "message": str(exc)})
            return
        self.answer(200, switches)


def make_app(
    sandbox: Sandbox | None = None, *, max_conversions: int = MAX_CONVERSIONS
) -> tornado.web.Application:
    """The vNative sandbox: the import and jobs routes plus the control API under `/_sandbox/`.

    Args:
        sandbox: Shared state; by default a new one allowing 60 calls per key per minute.
        max_conversions: Most conversions one import call may carry (code 20 beyond).

    Returns:
        The tornado application; serve it with `sandboxes.base.serve`.
    """
    if sandbox is None:
        sandbox = Sandbox(rate_limit=RATE_LIMIT, rate_window_s=60.0)
    imports = _Imports(max_conversions)
    sandbox.on_reset.append(imports.clear)
    routes = [
        (r"/advertiser/conversion-import", _ConversionImport),
        (r"/jobs(?:/([^/]+))?", _Jobs),
        (r"/_sandbox/vnative/(\w+)", _Switches),
    ]
    return application(sandbox, routes, vnative_imports=imports)
