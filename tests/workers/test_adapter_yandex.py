"""The Yandex adapter: the multipart CSV request, and Yandex's answers read into verdicts.

No I/O: requests are built and parsed back, responses are made by hand.
"""

from __future__ import annotations

import csv
import email.parser
import email.policy
import io
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from dispatcher import Destination
from dispatcher.settings import YandexSettings
from workers.adapters import JobAdapter
from workers.adapters.base import Verdict
from workers.adapters.yandex import ADAPTER, seconds_to_utc_midnight, to_csv
from workers.limiter import Limit

DEST = Destination(
    platform="yandex", token="ya-secret", counter_id="4242", client_id_type="USER_ID"
)
TABLE = YandexSettings(base_url="https://ym.example/", timeout_s=7.0)
BASE = "https://ym.example/management/v1/counter/4242/offline_conversions"


def row(i: int, **extra: Any) -> bytes:
    return json.dumps(
        {"UserId": f"u{i}", "Target": "paid", "DateTime": 1700000000 + i, **extra}
    ).encode()


def form_file(request: httpx.Request) -> tuple[dict[str, str], str]:
    """The multipart part named "file": its headers and its text, parsed as a mail parser would."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.read())
    (part,) = list(message.iter_parts())
    headers = {k.lower(): str(v) for k, v in part.items()}
    return headers, part.get_payload(decode=True).decode("utf-8")


def respond(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(
        status, content=content, headers=headers, request=httpx.Request("GET", BASE)
    )


def yandex_error(status: int, kind: str, message: str = "msg") -> dict[str, Any]:
    return {
        "errors": [{"error_type": kind, "message": message}],
        "code": status,
        "message": message,
    }


def uploading(**fields: Any) -> dict[str, Any]:
    base = {"id": 555, "create_time": "2026-01-01T00:00:00+00:00", "source_quantity": 3}
    base |= {"line_quantity": 3, "comment": "b1", "client_id_type": "USER_ID", "status": "PREPARED"}
    return {"uploading": base | fields}


def test_a_batch_is_one_multipart_csv_upload_labelled_with_the_batch_id() -> None:
    # Given three stored rows, one with a price and a currency
    payloads = [row(0), row(1, Price="49.90", Currency="EUR"), row(2)]
    # When the adapter builds the upload
    request = ADAPTER.build_request(DEST, TABLE, payloads, "abc123def456")
    # Then it is a POST to the counter's upload with the type and the batch id as comment
    assert request.method == "POST"
    assert str(request.url).split("?")[0] == f"{BASE}/upload"
    assert dict(request.url.params) == {"client_id_type": "USER_ID", "comment": "abc123def456"}
    assert request.headers["Authorization"] == "OAuth ya-secret"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert request.extensions["timeout"]["read"] == 7.0
    # And the form field "file" is data.csv, text/csv, UTF-8 CSV with a header row
    headers, text = form_file(request)
    assert 'name="file"' in headers["content-disposition"]
    assert 'filename="data.csv"' in headers["content-disposition"]
    assert headers["content-type"] == "text/csv"
    assert list(csv.reader(io.StringIO(text))) == [
        ["UserId", "Target", "DateTime", "Price", "Currency"],
        ["u0", "paid", "1700000000", "", ""],
        ["u1", "paid", "1700000001", "49.90", "EUR"],
        ["u2", "paid", "1700000002", "", ""],
    ]


def test_price_and_currency_columns_appear_only_when_a_row_has_them() -> None:
    assert to_csv([row(0), row(1)]).decode().splitlines() == [
        "UserId,Target,DateTime",
        "u0,paid,1700000000",
        "u1,paid,1700000001",
    ]


def test_rows_that_fill_different_columns_go_in_separate_uploads() -> None:
    # Given a batch of rows with and without a price, interleaved
    priced = {"Price": "49.90", "Currency": "EUR"}
    payloads = [row(0), row(1, **priced), row(2), row(3, **priced)]
    # Then the engine is told to send them as two uploads, each in its original order
    assert ADAPTER.parts(payloads) == [[0, 2], [1, 3]]
    # And each upload fills every cell of its header
    for part in ADAPTER.parts(payloads):
        lines = to_csv([payloads[i] for i in part]).decode().splitlines()
        assert all(",," not in line and not line.endswith(",") for line in lines)
    assert ADAPTER.parts([row(0), row(1)]) == [[0, 1]]


def test_non_ascii_values_are_sent_as_utf8() -> None:
    text = to_csv([row(0, Target="покупка")])
    assert "покупка".encode() in text


def test_limits_are_the_user_quota_first_then_the_ip_quota() -> None:
    limits = ADAPTER.limits(DEST, TABLE)
    assert limits == [
        Limit("yandex", f"user:{DEST.fingerprint()}", TABLE.rate_per_min, TABLE.burst),
        Limit("yandex", "ip", 30 * 60, burst=30),
    ]
    assert "ya-secret" not in repr(limits)


def test_an_accepted_upload_delivers_every_row_and_names_the_job() -> None:
    # Given Yandex accepted an upload of 3 rows as upload 555
    # When its answer is read
    outcome = ADAPTER.parse_response(respond(200, uploading()), 3)
    # Then every row is delivered and the upload is the job to follow
    assert [r.verdict for r in outcome.results] == [Verdict.DELIVERED] * 3
    assert outcome.job_id == "555"
    assert outcome.job_state == "PREPARED"
    assert outcome.job_detail == "line_quantity 3 of source_quantity 3"
    assert outcome.warnings == []


def test_an_upload_accepted_with_another_2xx_is_delivered_too() -> None:
    outcome = ADAPTER.parse_response(respond(201, uploading()), 3)
    assert [r.verdict for r in outcome.results] == [Verdict.DELIVERED] * 3
    assert outcome.job_id == "555"


def test_rows_yandex_dropped_are_surfaced_as_a_warning() -> None:
    # Given Yandex kept 2 of the 3 rows of an upload
    # When its answer is read
    outcome = ADAPTER.parse_response(respond(200, uploading(line_quantity=2)), 3)
    # Then the upload is delivered (Yandex took the file) and the loss is named
    assert {r.verdict for r in outcome.results} == {Verdict.DELIVERED}
    assert outcome.job_detail == "line_quantity 2 of source_quantity 3"
    (warning,) = outcome.warnings
    assert "1 of 3 rows" in warning
    assert "555" in warning


@pytest.mark.parametrize("status", [429, 420])
@pytest.mark.parametrize(
    ("kind", "scopes"),
    [
        ("quota_requests_by_ip", ["ip"]),
        ("quota_parallel_requests", ["user"]),
    ],
)
def test_short_quotas_retry_in_about_a_second_blocking_their_scope(
    status: int, kind: str, scopes: list[str]
) -> None:
    outcome = ADAPTER.parse_response(respond(status, yandex_error(status, kind)), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.WAIT}
    assert outcome.throttled
    assert outcome.retry_after_s == 1.0
    assert outcome.block_scopes == scopes
    assert kind in outcome.results[0].reason


@pytest.mark.parametrize("status", [429, 420])
def test_the_daily_user_quota_waits_for_midnight_utc(status: int) -> None:
    outcome = ADAPTER.parse_response(
        respond(status, yandex_error(status, "quota_requests_by_uid")), 1
    )
    assert outcome.results[0].verdict is Verdict.WAIT
    assert outcome.block_scopes == ["user"]
    assert outcome.retry_after_s is not None
    assert abs(outcome.retry_after_s - seconds_to_utc_midnight()) < 5


def test_retry_after_wins_over_the_quota_s_own_wait() -> None:
    # Given the daily quota ran out and Yandex says when to come back
    body = yandex_error(429, "quota_requests_by_uid")
    # When the answer is read
    outcome = ADAPTER.parse_response(respond(429, body, {"Retry-After": "12"}), 1)
    # Then Retry-After decides the wait, and the user scope is still the one blocked
    assert outcome.retry_after_s == 12.0
    assert outcome.block_scopes == ["user"]


def test_midnight_is_counted_in_utc() -> None:
    assert seconds_to_utc_midnight(datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)) == 30.0


def test_an_invalid_upload_rejects_every_row_with_yandex_s_message() -> None:
    body = yandex_error(400, "invalid_uploading", "the header row lacks the required column UserId")
    outcome = ADAPTER.parse_response(respond(400, body), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.REJECTED}
    assert "invalid_uploading" in outcome.results[0].reason
    assert "lacks the required column UserId" in outcome.results[0].reason
    assert outcome.status == 400


@pytest.mark.parametrize(("status", "kind"), [(401, "unauthorized"), (403, "invalid_token")])
def test_refused_credentials_pause_the_destination(status: int, kind: str) -> None:
    outcome = ADAPTER.parse_response(respond(status, yandex_error(status, kind)), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.AUTH}
    assert kind in outcome.results[0].reason
    assert "ya-secret" not in repr(outcome)


@pytest.mark.parametrize("status", [500, 503])
def test_backend_errors_are_retried(status: int) -> None:
    outcome = ADAPTER.parse_response(respond(status, yandex_error(status, "backend_error")), 2)
    assert {r.verdict for r in outcome.results} == {Verdict.RETRY}
    assert not outcome.throttled


def test_the_adapter_follows_uploads_as_jobs() -> None:
    assert isinstance(ADAPTER, JobAdapter)
    request = ADAPTER.job_request(DEST, TABLE, "555")
    assert (request.method, str(request.url)) == ("GET", f"{BASE}/uploading/555")
    assert request.headers["Authorization"] == "OAuth ya-secret"


@pytest.mark.parametrize(
    ("status", "finished", "failed"),
    [
        ("PREPARED", False, False),
        ("UPLOADED", False, False),
        ("EXPORTED", False, False),
        ("MATCHED", False, False),
        ("PROCESSED", True, False),
        ("LINKAGE_FAILURE", True, True),
    ],
)
def test_upload_statuses_map_to_job_states(status: str, finished: bool, failed: bool) -> None:
    state = ADAPTER.parse_job(respond(200, uploading(status=status, line_quantity=2)))
    assert (state.state, state.finished, state.failed) == (status, finished, failed)
    assert state.detail == "line_quantity 2 of source_quantity 3"


def test_a_poll_that_fails_tells_nothing_and_raises_an_http_error() -> None:
    with pytest.raises(httpx.HTTPError):
        ADAPTER.parse_job(respond(429, yandex_error(429, "quota_parallel_requests")))


def test_an_upload_yandex_no_longer_knows_ends_without_dead_lettering_its_rows() -> None:
    # Its rows may have been processed: failing the job would dead-letter delivered events
    state = ADAPTER.parse_job(respond(404, yandex_error(404, "not_found")))
    assert state.finished
    assert not state.failed
    assert "may have been processed" in state.detail


def test_a_lookup_finds_the_upload_by_its_comment() -> None:
    # Given Yandex lists two uploads, commented b1 and b2
    request = ADAPTER.lookup_request(DEST, TABLE, "b2")
    assert request is not None
    assert (request.method, str(request.url)) == ("GET", f"{BASE}/uploadings")
    listing = {
        "uploadings": [
            uploading(id=1, comment="b1")["uploading"],
            uploading(id=2, comment="b2")["uploading"],
        ]
    }
    assert ADAPTER.parse_lookup(respond(200, listing), "b2") == "2"
    assert ADAPTER.parse_lookup(respond(200, listing), "b3") is None
    assert ADAPTER.parse_lookup(respond(200, {"uploadings": []}), "b1") is None


def test_a_lookup_that_fails_leaves_the_batch_unknown() -> None:
    with pytest.raises(httpx.HTTPError):
        ADAPTER.parse_lookup(respond(503, yandex_error(503, "backend_error")), "b1")
