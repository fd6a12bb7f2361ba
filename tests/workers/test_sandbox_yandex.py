"""The Yandex Metrica sandbox, driven over real HTTP the way the delivery engine drives Yandex."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandboxes import yandex
from sandboxes.base import RunningServer, Sandbox, fingerprint, serve
from tests.conftest import wait_for

TOKEN = "ya-token"
UPLOAD = "/management/v1/counter/4242/offline_conversions/upload"
UPLOADINGS = "/management/v1/counter/4242/offline_conversions/uploadings"
HEADER = "ClientId,Target,DateTime,Price,Currency"


class Clock:
    """Real time, unless a test freezes it."""

    frozen: float | None = None

    def __call__(self) -> float:
        return time.time() if self.frozen is None else self.frozen


CLOCK = Clock()


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    sandbox = Sandbox(rate_limit=yandex.DAILY_QUOTA, rate_window_s=86_400.0, clock=CLOCK)
    running = serve(lambda: yandex.make_app(sandbox))
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    CLOCK.frozen = None
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        http.post("/_sandbox/reset").raise_for_status()
        yield http
    CLOCK.frozen = None


def csv_file(*rows: str, header: str = HEADER) -> bytes:
    return "\n".join([header, *rows]).encode()


def past(seconds_ago: int = 3600) -> int:
    return int(CLOCK()) - seconds_ago


def upload(
    http: httpx.Client,
    data: bytes,
    token: str | None = TOKEN,
    scheme: str = "OAuth",
    **params: str,
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
    query = {"client_id_type": "CLIENT_ID", "comment": "batch1"} | params
    files = {"file": ("data.csv", data, "text/csv")}
    return http.post(UPLOAD, params=query, headers=headers, files=files)


def get(http: httpx.Client, path: str, token: str = TOKEN) -> httpx.Response:
    return http.get(path, headers={"Authorization": f"OAuth {token}"})


def error_type(response: httpx.Response) -> str:
    body = response.json()
    assert body["code"] == response.status_code
    kind: str = body["errors"][0]["error_type"]
    return kind


def events(http: httpx.Client) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = http.get("/_sandbox/events").json()
    return rows


def in_flight(http: httpx.Client) -> int:
    counts: dict[str, int] = http.get("/_sandbox/yandex/config").json()["in_flight"]
    return counts.get(fingerprint(TOKEN), 0)


def test_an_empty_price_or_currency_cell_is_a_rejected_row(client: httpx.Client) -> None:
    # Given a file whose header has Price and Currency, one row leaving both empty
    at = past()
    data = csv_file(f"111.1,paid,{at},49.90,EUR", f"222.2,paid,{at},,")
    # When it is uploaded
    response = upload(client, data)
    # Then that row is not taken: the docs define a price by its format, not an empty cell
    assert response.status_code == 200
    uploading = response.json()["uploading"]
    assert (uploading["source_quantity"], uploading["line_quantity"]) == (2, 1)
    assert [r["ClientId"] for r in events(client)] == ["111.1"]


def test_a_valid_upload_is_accepted_and_its_rows_recorded(client: httpx.Client) -> None:
    # Given a CSV file of two valid rows with a price each
    at = past()
    data = csv_file(f"111.1,paid,{at},49.90,EUR", f"222.2,paid,{at},5,RUB")
    # When it is uploaded for a CLIENT_ID counter with a comment
    response = upload(client, data)
    # Then Yandex's uploading object answers, counting both rows
    assert response.status_code == 200
    uploading = response.json()["uploading"]
    assert uploading["id"] > 0
    assert uploading["comment"] == "batch1"
    assert uploading["client_id_type"] == "CLIENT_ID"
    assert (uploading["source_quantity"], uploading["line_quantity"]) == (2, 2)
    assert uploading["status"] == "PREPARED"
    assert uploading["create_time"]
    # And the rows are recorded as the events, with the CSV columns, the token masked
    assert events(client) == [
        {
            "ClientId": "111.1",
            "Target": "paid",
            "DateTime": str(at),
            "Price": "49.90",
            "Currency": "EUR",
        },
        {
            "ClientId": "222.2",
            "Target": "paid",
            "DateTime": str(at),
            "Price": "5",
            "Currency": "RUB",
        },
    ]
    (call,) = client.get("/_sandbox/received").json()
    assert call["token_fingerprint"] == fingerprint(TOKEN)
    assert call["headers"]["authorization"] == "OAuth ***"
    assert call["query"] == {"client_id_type": "CLIENT_ID", "comment": "batch1"}


@pytest.mark.parametrize(
    ("token", "scheme", "status", "kind"),
    [
        (None, "OAuth", 401, "unauthorized"),
        (TOKEN, "Bearer", 401, "unauthorized"),
        ("revoked", "OAuth", 403, "invalid_token"),
    ],
)
def test_credentials_are_checked(
    client: httpx.Client, token: str | None, scheme: str, status: int, kind: str
) -> None:
    client.post("/_sandbox/config", json={"revoked_tokens": ["revoked"]})
    response = upload(client, csv_file(f"1,paid,{past()},1,RUB"), token=token, scheme=scheme)
    assert response.status_code == status
    assert error_type(response) == kind
    assert events(client) == []


def test_an_unknown_client_id_type_is_refused(client: httpx.Client) -> None:
    response = upload(client, csv_file(f"1,paid,{past()},1,RUB"), client_id_type="EMAIL")
    assert response.status_code == 400
    assert error_type(response) == "invalid_parameter"


@pytest.mark.parametrize(
    ("header", "client_id_type", "words"),
    [
        ("UserId,Target,DateTime", "CLIENT_ID", "'UserId'"),
        ("ClientId,Target,DateTime", "YCLID", "'ClientId'"),
        ("ClientId,DateTime", "CLIENT_ID", "Target"),
        ("ClientId,Target", "CLIENT_ID", "DateTime"),
        ("ClientId,Target,DateTime,Revenue", "CLIENT_ID", "'Revenue'"),
    ],
)
def test_the_columns_must_fit_the_client_id_type(
    client: httpx.Client, header: str, client_id_type: str, words: str
) -> None:
    # Given a file whose header does not fit the upload's client_id_type
    cells = ",".join(["1", "paid", str(past()), "x"][: len(header.split(","))])
    # When it is uploaded
    response = upload(client, csv_file(cells, header=header), client_id_type=client_id_type)
    # Then the whole file is refused, naming the column, and nothing is recorded
    assert response.status_code == 400
    assert error_type(response) == "invalid_uploading"
    assert words in response.json()["message"]
    assert events(client) == []


def test_invalid_rows_are_dropped_and_counted(client: httpx.Client) -> None:
    # Given a goal the counter does not have, and a file with one good row and six bad ones
    client.post("/_sandbox/yandex/config", json={"unknown_goals": ["gone"]})
    at = past()
    data = csv_file(
        f"1,paid,{at},10.5,EUR",
        f"2,gone,{at},,",
        f"3,paid,{int(time.time()) + 600},,",
        "4,paid,yesterday,,",
        f'5,paid,{at},"10,5",EUR',
        f"6,paid,{at},10.5,eur",
        f",paid,{at},,",
    )
    # When it is uploaded
    response = upload(client, data)
    # Then Yandex keeps one row of seven, and only that row is recorded
    assert response.status_code == 200
    uploading = response.json()["uploading"]
    assert (uploading["line_quantity"], uploading["source_quantity"]) == (1, 7)
    assert [row["ClientId"] for row in events(client)] == ["1"]


def test_a_file_without_a_valid_row_is_refused(client: httpx.Client) -> None:
    response = upload(client, csv_file(f"1,paid,{int(time.time()) + 600},,"))
    assert response.status_code == 400
    assert error_type(response) == "invalid_uploading"
    assert "line 2" in response.json()["message"]
    assert events(client) == []


def test_an_upload_advances_one_status_per_poll_and_is_listed(client: httpx.Client) -> None:
    # Given an accepted upload
    upload_id = upload(client, csv_file(f"1,paid,{past()},1,RUB")).json()["uploading"]["id"]
    path = f"/management/v1/counter/4242/offline_conversions/uploading/{upload_id}"
    # When it is polled five times
    statuses = [get(client, path).json()["uploading"]["status"] for _ in range(5)]
    # Then it moves through Yandex's statuses to PROCESSED, and stays there
    assert statuses == ["UPLOADED", "EXPORTED", "MATCHED", "PROCESSED", "PROCESSED"]
    (listed,) = get(client, UPLOADINGS).json()["uploadings"]
    assert (listed["id"], listed["comment"], listed["status"]) == (upload_id, "batch1", "PROCESSED")


def test_uploads_are_per_counter(client: httpx.Client) -> None:
    upload_id = upload(client, csv_file(f"1,paid,{past()},1,RUB")).json()["uploading"]["id"]
    other = f"/management/v1/counter/7/offline_conversions/uploading/{upload_id}"
    assert get(client, other).status_code == 404
    assert get(client, "/management/v1/counter/7/offline_conversions/uploadings").json() == {
        "uploadings": []
    }


def test_the_linkage_failure_switch_fails_new_uploads(client: httpx.Client) -> None:
    # Given the switch is on
    client.post("/_sandbox/yandex/config", json={"linkage_failure": True})
    upload_id = upload(client, csv_file(f"1,paid,{past()},1,RUB")).json()["uploading"]["id"]
    path = f"/management/v1/counter/4242/offline_conversions/uploading/{upload_id}"
    # When the upload is polled to the end
    statuses = [get(client, path).json()["uploading"]["status"] for _ in range(4)]
    # Then it ends in LINKAGE_FAILURE
    assert statuses[-1] == "LINKAGE_FAILURE"


def test_a_fourth_parallel_request_of_a_user_is_refused(client: httpx.Client) -> None:
    # Given every request takes a while, and three uploads of one token are in progress
    client.post("/_sandbox/config", json={"latency_s": 1.0})
    answers: list[int] = []

    def send(i: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=10) as own:
            answers.append(upload(own, csv_file(f"{i},paid,{past()},1,RUB")).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: in_flight(client) == 3, 10, "three requests in progress")
    # When a fourth request of the same user arrives
    fourth = get(client, UPLOADINGS)
    # Then it is refused with quota_parallel_requests, and the three are answered
    assert fourth.status_code == 429
    assert error_type(fourth) == "quota_parallel_requests"
    for thread in threads:
        thread.join(10)
    assert answers == [200, 200, 200]
    assert client.get("/_sandbox/yandex/config").json()["peak_uploads"] == {fingerprint(TOKEN): 3}
    # And another user is not affected
    assert get(client, UPLOADINGS, token="other").status_code == 200


def test_more_than_30_requests_a_second_from_one_ip_are_refused(client: httpx.Client) -> None:
    # Given time stands still
    CLOCK.frozen = time.time()
    # When 31 requests come from one address within that second
    statuses = [get(client, UPLOADINGS, token=f"user{i}").status_code for i in range(31)]
    # Then the 31st is refused with quota_requests_by_ip
    assert statuses == [200] * 30 + [429]
    assert error_type(get(client, UPLOADINGS)) == "quota_requests_by_ip"
    # And a second later requests go through again
    CLOCK.frozen += 1.0
    assert get(client, UPLOADINGS).status_code == 200


def test_the_daily_quota_of_a_user_is_enforced(client: httpx.Client) -> None:
    # Given a daily quota of 2 requests
    client.post("/_sandbox/config", json={"rate_limit": 2})
    # When a user makes three
    statuses = [get(client, UPLOADINGS).status_code for _ in range(3)]
    # Then the third is refused with quota_requests_by_uid
    assert statuses == [200, 200, 429]
    assert error_type(get(client, UPLOADINGS)) == "quota_requests_by_uid"


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "quota_requests_by_ip"), (420, "quota_requests_by_ip"), (503, "backend_error")],
)
def test_injected_faults_answer_in_yandex_s_error_body(
    client: httpx.Client, status: int, kind: str
) -> None:
    client.post("/_sandbox/faults", json={"status": status})
    response = upload(client, csv_file(f"1,paid,{past()},1,RUB"))
    assert response.status_code == status
    assert error_type(response) == kind
    assert events(client) == []


def test_an_upload_whose_answer_is_held_is_listed_after_the_client_gave_up(
    client: httpx.Client,
) -> None:
    # Given Yandex holds its answer to the next call for 1 s
    client.post("/_sandbox/faults", json={"status": 0, "delay_s": 1.0})
    # When the client gives up after 0.2 s
    impatient = httpx.Client(base_url=str(client.base_url), timeout=0.2)
    with impatient, pytest.raises(httpx.ReadTimeout):
        upload(impatient, csv_file(f"1,paid,{past()},1,RUB"), comment="held")
    # Then the list still shows the upload, as Yandex did receive it
    comments = [u["comment"] for u in get(client, UPLOADINGS).json()["uploadings"]]
    assert comments == ["held"]
    assert len(events(client)) == 1


def test_bad_switches_are_refused(client: httpx.Client) -> None:
    assert (
        client.post("/_sandbox/yandex/config", json={"linkage_failure": "yes"}).status_code == 400
    )
    assert client.post("/_sandbox/yandex/config", json={"nope": 1}).status_code == 400


def test_reset_forgets_uploads_and_switches(client: httpx.Client) -> None:
    client.post("/_sandbox/yandex/config", json={"linkage_failure": True, "unknown_goals": ["x"]})
    upload(client, csv_file(f"1,paid,{past()},1,RUB"))
    client.post("/_sandbox/reset")
    switches = client.get("/_sandbox/yandex/config").json()
    assert (switches["linkage_failure"], switches["unknown_goals"]) == (False, [])
    assert get(client, UPLOADINGS).json() == {"uploadings": []}
    assert events(client) == []
