"""Yandex Metrica offline conversions, imitated: CSV uploads, upload statuses and quotas.

Under `/management/v1/counter/{counterId}/offline_conversions/`: `POST upload` (multipart field
`file`), `GET uploading/{id}` (PREPARED, UPLOADED, EXPORTED, MATCHED, then PROCESSED: one step
per poll or per `JOB_STEP_S` since the upload, whichever is further) and `GET uploadings`.
Quotas answer 429 in Yandex's error body:
`quota_parallel_requests` (3 in progress per token), `quota_requests_by_ip` (30/s) and
`quota_requests_by_uid` (the shared `rate_limit`: 5,000 per token per sliding day, where Yandex
resets at 00:00 UTC). Invalid rows are dropped; a file without a valid row is refused.
`GET|POST /_sandbox/yandex/config`: `unknown_goals` (rows naming them are dropped) and
`linkage_failure` (new uploads end in LINKAGE_FAILURE); GET adds `peak_uploads` and
`in_flight`, the most uploads and the requests in progress per token fingerprint.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import tornado.web

from dispatcher.events.yandex import ID_COLUMNS
from sandboxes import base
from sandboxes.base import Sandbox
from sandboxes.yandex_csv import (
    COLUMNS,
    DAILY_QUOTA,
    MAX_PARALLEL,
    PER_IP_PER_S,
    read_file,
    yandex_error,
)

JOB_STEP_S = 1.0  # an upload moves one status on per second even if nobody polls

__all__ = [
    "COLUMNS",
    "DAILY_QUOTA",
    "LIST_WAIT_S",
    "MAX_PARALLEL",
    "PER_IP_PER_S",
    "STEPS",
    "Metrica",
    "make_app",
    "read_file",
    "yandex_error",
]

Json = dict[str, Any]
STEPS = ("PREPARED", "UPLOADED", "EXPORTED", "MATCHED")
LIST_WAIT_S = 10.0  # the longest a list waits for uploads still being answered
_KIND = {base.MISSING_TOKEN: "unauthorized", base.REVOKED_TOKEN: "invalid_token"}
_KIND[base.THROTTLED] = "quota_requests_by_uid"


class Metrica:
    """Uploads, quota counters and switches of one sandbox.

    Changed only on the server's event loop, except `clear` (tests may reset the sandbox from
    their own thread), which swaps in new containers instead of changing the ones in use.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        # A second sandbox state serves as the per-IP sliding window (its "token" is the IP).
        self.per_ip = Sandbox(rate_limit=PER_IP_PER_S, rate_window_s=1.0, clock=clock)
        self.busy: Counter[tuple[str, str]] = Counter()  # ("token"|"upload", token) -> count
        self.clear()

    def clear(self) -> None:
        """Forget uploads, peaks and switches; requests in progress still count."""
        self.uploads: dict[int, tuple[str, bool, Json]] = {}  # id -> counter, fails, public
        self.polls: Counter[int] = Counter()
        self.created_s: dict[int, float] = {}
        self.upload_peaks: Counter[str] = Counter()
        self.switches: Json = {"unknown_goals": [], "linkage_failure": False}
        self.per_ip.reset()

    def configure(self, changes: Json) -> None:
        """Change switches; ValueError names a bad one, and nothing changes."""
        for name, value in changes.items():
            goals = isinstance(value, list) and all(isinstance(g, str) for g in value)
            if not {"unknown_goals": goals, "linkage_failure": isinstance(value, bool)}.get(name):
                raise ValueError(f"bad switch {name}={value!r}: unknown_goals, linkage_failure")
        self.switches = self.switches | changes

    def enter(self, ip: str, token: str, upload: bool) -> str:
        """Count a request in; returns the quota it breaks ("" if none, and then it counts)."""
        if self.per_ip.admit(ip) is not None:
            return "quota_requests_by_ip"
        if token and self.busy["token", token] >= MAX_PARALLEL:
            return "quota_parallel_requests"
        self.count(token, upload, 1)
        self.upload_peaks[token] = max(self.upload_peaks[token], self.busy["upload", token])
        return ""

    def count(self, token: str, upload: bool, by: int) -> None:
        """Count a request in (+1) or out (-1)."""
        self.busy["token", token] += by
        self.busy["upload", token] += by if upload else 0

    def snapshot(self) -> Json:
        """The switches, plus the peak uploads and the requests in progress per token."""
        peaks = {base.fingerprint(t): n for t, n in self.upload_peaks.items() if t}
        now = {base.fingerprint(t): n for (k, t), n in self.busy.items() if k == "token" and t}
        return {**self.switches, "peak_uploads": peaks, "in_flight": now}

    def add(self, counter: str, uploading: Json) -> Json:
        """Store an accepted upload under the next id; returns its public object."""
        public = {"id": 1001 + len(self.uploads), **uploading, "status": STEPS[0]}
        self.uploads[public["id"]] = (counter, self.switches["linkage_failure"], public)
        self.created_s[public["id"]] = self.clock()
        return dict(public)

    def _advance(self, upload_id: int) -> Json:
        _, fails, public = self.uploads[upload_id]
        by_time = int((self.clock() - self.created_s[upload_id]) / JOB_STEP_S)
        last = "LINKAGE_FAILURE" if fails else "PROCESSED"
        step = max(self.polls[upload_id], by_time)
        public["status"] = dict(enumerate(STEPS)).get(step, last)
        return dict(public)

    def listing(self, counter: str) -> list[Json]:
        """Every upload of `counter`, with its status as of now."""
        return [self._advance(i) for i, (c, _, _) in list(self.uploads.items()) if c == counter]

    def poll(self, counter: str, upload_id: int) -> Json | None:
        """The upload one status further on, or None if the counter has no such upload."""
        if self.uploads.get(upload_id, ("",))[0] != counter:
            return None
        self.polls[upload_id] += 1
        return self._advance(upload_id)


class _Metrica(base.PlatformHandler):
    auth_scheme = "OAuth"
    counted: tuple[str, bool] | None = None  # (token, is an upload) while counted in

    @property
    def metrica(self) -> Metrica:
        return cast(Metrica, self.settings["yandex_metrica"])

    def error_body(self, status: int, reason: str = "") -> Json:
        return yandex_error(status, _KIND.get(reason, reason))

    def refuse(self, status: int, reason: str, headers: Mapping[str, str] = {}) -> None:
        # The shared base answers a revoked token 401; Yandex says 403 invalid_token.
        super().refuse(403 if reason == base.REVOKED_TOKEN else status, reason, headers)

    async def prepare(self) -> None:
        # Counted before the shared latency and faults, so a held request stays "in progress".
        token, upload = self.read_token(), self.request.method == "POST"
        broken = self.metrica.enter(self.request.remote_ip or "", token, upload)
        if broken:
            self.token, self.arrived_s = token, self.sandbox.clock()
            self.refuse(429, broken)
            return
        self.counted = (token, upload)
        await super().prepare()

    def on_finish(self) -> None:
        if self.counted is not None:
            self.metrica.count(*self.counted, -1)
            self.counted = None
        super().on_finish()


class _Upload(_Metrica):
    def post(self, counter: str) -> None:
        kind = self.get_query_argument("client_id_type", "CLIENT_ID") or ""
        comment = self.get_query_argument("comment", "") or ""
        files = self.request.files.get("file", [])
        goals = frozenset(self.metrica.switches["unknown_goals"])
        if kind not in ID_COLUMNS or len(comment) > 255 or not (comment.isalnum() or not comment):
            message = f"client_id_type is one of {', '.join(ID_COLUMNS)}; comment <= 255 letters"
            self.answer(400, yandex_error(400, "invalid_parameter", message + " and digits"))
            return
        try:
            if not files:
                raise ValueError("the multipart form field 'file' is missing")
            rows, source = read_file(files[0].body, kind, self.sandbox.clock(), goals)
        except ValueError as exc:
            self.answer(400, yandex_error(400, "invalid_uploading", str(exc)))
            return
        self.sandbox.accept(self.token, self.request, rows, ID_COLUMNS[kind])
        created = datetime.fromtimestamp(self.sandbox.clock(), UTC).isoformat(timespec="seconds")
        uploading = {"create_time": created, "source_quantity": source}
        uploading |= {"line_quantity": len(rows), "comment": comment, "client_id_type": kind}
        self.answer(200, {"uploading": self.metrica.add(counter, uploading)})


class _Uploads(_Metrica):
    async def get(self, counter: str, upload_id: str | None) -> None:
        if upload_id is not None:
            found = self.metrica.poll(counter, int(upload_id))
            if found is None:
                self.answer(404, yandex_error(404, "not_found", f"no upload {upload_id} here"))
            else:
                self.answer(200, {"uploading": found})
            return
        # An upload whose body has arrived exists, even while its answer is held (a delay_s
        # fault): wait for the token's uploads in progress, as Yandex would list them.
        for _ in range(int(LIST_WAIT_S / 0.01)):
            if not self.metrica.busy["upload", self.token]:
                break
            await asyncio.sleep(0.01)
        self.answer(200, {"uploadings": self.metrica.listing(counter)})


class _Switches(base.JsonHandler):
    def get(self) -> None:
        self.answer(200, cast(Metrica, self.settings["yandex_metrica"]).snapshot())

    def post(self) -> None:
        metrica = cast(Metrica, self.settings["yandex_metrica"])
        try:
            changes = json.loads(self.request.body or b"{}")
            metrica.configure(changes if isinstance(changes, dict) else {"body": changes})
        except ValueError as exc:
            self.answer(400, {"status": 400, "message": str(exc)})
            return
        self.answer(200, metrica.snapshot())


def make_app(sandbox: Sandbox | None = None) -> tornado.web.Application:
    """The Yandex Metrica sandbox: offline-conversion routes plus the control API.

    Args:
        sandbox: Shared state; by default a new one allowing 5,000 calls per token per day.

    Returns:
        The tornado application; serve it with `sandboxes.base.serve`.
    """
    if sandbox is None:
        sandbox = Sandbox(rate_limit=DAILY_QUOTA, rate_window_s=86_400.0)
    metrica = Metrica(sandbox.clock)
    sandbox.on_reset.append(metrica.clear)
    prefix = r"/management/v1/counter/(\d+)/offline_conversions"
    routes = [
        (rf"{prefix}/upload", _Upload),
        (rf"{prefix}/uploading(?:s|/(\d+))", _Uploads),
        (r"/_sandbox/yandex/config", _Switches),
    ]
    return base.application(sandbox, routes, yandex_metrica=metrica)
