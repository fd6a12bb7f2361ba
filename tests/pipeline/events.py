"""Event builders shared by the pipeline tests."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dispatcher import Conversion


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


def full_conversion(**changes: Any) -> Conversion:
    """A purchase using every field of the neutral Conversion, a minute old."""
    fields: dict[str, Any] = {
        "event": "purchase",
        "happened_at": datetime.now(UTC) - timedelta(minutes=1),
        "value": Decimal("49.90"),
        "currency": "EUR",
        "event_id": "full-1",
        "email": "jane.doe@example.com",
        "first_name": "Jane",
        "last_name": "Doe",
        "company": "Acme",
        "title": "Buyer",
        "country": "de",
        "external_id": "crm-77",
        "li_fat_id": "li-fat-1",
        "epik": "epik-1",
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "yandex_client_id": "157000000.1",
        "vnative_click_id": "5aae975a9b155cccddccefbe",
        "order_id": "o-9",
        "content_ids": ["sku-1"],
        "contents": [{"id": "sku-1", "name": "Mug", "price": "9.90", "quantity": 2}],
        "num_items": 2,
        "action_source": "app_ios",
        "partner_name": "ss-shop",
        "advertiser_tracking_enabled": False,
        "app": {"id": "429047995", "name": "Shop", "version": "7.1"},
        "device": {"brand": "Apple", "model": "iPhone15,2", "os_version": "17.1", "wifi": True},
        "subs": {"sub4": "newsletter", "sub10": "x"},
    }
    return Conversion.model_validate(fields | changes)
