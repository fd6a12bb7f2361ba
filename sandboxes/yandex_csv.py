"""The Yandex Metrica sandbox's reading of offline-conversion CSV files, and its error body.

A file keeps its valid rows and drops the others; it is refused as a whole when its encoding or
columns are wrong or no row is valid. Error bodies follow Yandex's shape, with our wording.
"""

from __future__ import annotations

import csv
import io
import re

from dispatcher.events.yandex import ID_COLUMNS
from sandboxes.base import Json

# The quotas `yandex` enforces; here because the error messages name them.
DAILY_QUOTA, PER_IP_PER_S, MAX_PARALLEL = 5000, 30, 3
COLUMNS = (*ID_COLUMNS.values(), "Target", "DateTime", "Price", "Currency")
_PRICE, _CURRENCY = re.compile(r"^\d+(\.\d+)?$"), re.compile(r"^[A-Z]{3}$")
# A bare injected 429 is the per-IP quota: the one a busy integration meets most often.
_DEFAULT = {400: "invalid_parameter", 401: "unauthorized", 403: "invalid_token", 404: "not_found"}
_DEFAULT |= {420: "quota_requests_by_ip", 429: "quota_requests_by_ip"}
_MESSAGES = {  # our wording
    "quota_requests_by_uid": f"Quota exceeded: {DAILY_QUOTA} requests per day per user",
    "quota_requests_by_ip": f"Quota exceeded: {PER_IP_PER_S} requests per second per IP",
    "quota_parallel_requests": f"Quota exceeded: {MAX_PARALLEL} parallel requests per user",
}


def yandex_error(status: int, kind: str = "", message: str = "") -> Json:
    """Yandex's error body: `{"errors": [{"error_type", "message"}], "code", "message"}`."""
    kind = kind or _DEFAULT.get(status, "backend_error" if status >= 500 else "error")
    message = message or _MESSAGES.get(kind, kind.replace("_", " ").capitalize())
    error = {"error_type": kind, "message": message}
    return {"errors": [error], "code": status, "message": message}


def read_file(
    data: bytes, client_id_type: str, now_s: float, unknown_goals: frozenset[str]
) -> tuple[list[Json], int]:
    """The rows Yandex keeps from an uploaded CSV file, and how many rows the file had.

    Raises:
        ValueError: The file as a whole is unusable (encoding, columns, no valid row).
    """
    try:
        lines = [line for line in csv.reader(io.StringIO(data.decode("utf-8-sig"))) if line]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"the file is not UTF-8 CSV: {exc}") from None
    header = [name.strip() for name in lines[0]] if lines else []
    id_column = ID_COLUMNS[client_id_type]
    for name in header:
        if name not in COLUMNS or (name in ID_COLUMNS.values() and name != id_column):
            raise ValueError(f"column {name!r} does not belong in a {client_id_type} upload")
    for name in (id_column, "Target", "DateTime"):
        if name not in header:
            raise ValueError(f"the header row lacks the required column {name}")
    kept, problems = [], []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            problems.append(f"line {number}: {len(line)} cells under {len(header)} columns")
            continue
        row = dict(zip(header, (cell.strip() for cell in line), strict=True))
        problem = _row_problem(row, id_column, now_s, unknown_goals)
        if problem:
            problems.append(f"line {number}: {problem}")
        else:
            kept.append({name: value for name, value in row.items() if value})
    if not kept:
        raise ValueError("no valid rows" + "".join(f"; {p}" for p in problems[:5]))
    return kept, len(lines) - 1


def _row_problem(row: dict[str, str], id_column: str, now_s: float, goals: frozenset[str]) -> str:
    date_time, price, currency = row["DateTime"], row.get("Price"), row.get("Currency")
    if not (row[id_column] and row["Target"]):
        return f"{id_column} or Target is empty"
    if row["Target"] in goals:
        return f"unknown goal {row['Target']!r}"
    if not (date_time.isdigit() and int(date_time) <= now_s):
        return "DateTime must be Unix seconds, not in the future"
    # A column in the header is filled in every row: an empty cell is no price or code.
    if price is not None and not _PRICE.match(price):
        return "Price must be a decimal with a dot separator"
    if currency is not None and not _CURRENCY.match(currency):
        return "Currency must be a three-letter ISO 4217 code"
    return ""
