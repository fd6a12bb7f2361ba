"""Worker logs as one JSON object per line (`log_format = "json"`), for log pipelines.

Each line has `time`, `level`, `logger` and `message`, plus the delivery fields a record
carries (`destination`, `platform`, `batch`, `outcome`, `status`, `events`) when the
engine logged them. Tokens never reach a log record (the engine logs none).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FIELDS = ("destination", "platform", "batch", "outcome", "status", "events")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def use_json(logger: logging.Logger) -> None:
    """Format every handler of `logger` as JSON lines."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
