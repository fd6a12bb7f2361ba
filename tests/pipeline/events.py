"""Event builders shared by the pipeline tests."""

from __future__ import annotations

import time
from typing import Any


def linkedin(i: int, prefix: str = "ev") -> dict[str, Any]:
    """A valid LinkedIn event with a caller-chosen id, so tests can match what arrived."""
    return {
        "conversion": "urn:lla:llaPartnerConversion:123",
        "conversionHappenedAt": int(time.time() * 1000) - 60_000,
        "conversionValue": {"currencyCode": "EUR", "amount": "12.50"},
        "eventId": f"{prefix}-{i}",
        "user": {"userIds": [{"idType": "SHA256_EMAIL", "idValue": f"user{i}@example.com"}]},
    }


def many(n: int, prefix: str = "ev") -> list[dict[str, Any]]:
    """`n` valid LinkedIn events."""
    return [linkedin(i, prefix) for i in range(n)]
