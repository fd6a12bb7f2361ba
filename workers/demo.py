"""Sample conversions for the embedded run and the benchmark."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dispatcher import Conversion


def linkedin_events(n: int, seed: int = 7, rule: int = 104004) -> list[dict[str, Any]]:
    """`n` plausible LinkedIn conversions from the past hour, with raw emails to hash."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    return [
        {
            "conversion": f"urn:lla:llaPartnerConversion:{rule}",
            "conversionHappenedAt": now_ms - rng.randint(1_000, 3_600_000),
            "conversionValue": {
                "currencyCode": "USD",
                "amount": f"{rng.randint(5, 500)}.{i % 100:02d}",
            },
            "eventId": f"demo-{seed}-{i}",
            "user": {
                "userIds": [
                    {"idType": "SHA256_EMAIL", "idValue": f"Customer{i}@Example.com"},
                    {
                        "idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID",
                        "idValue": f"fat-{seed}-{i}",
                    },
                ]
            },
        }
        for i in range(n)
    ]


def purchases(n: int, seed: int = 7, start: int = 0) -> list[Conversion]:
    """`n` platform-neutral purchases with identifiers for all four platforms, numbered from
    `start` (so a large load can be built and enqueued a chunk at a time)."""
    rng = random.Random(seed + start * 1_000_003)
    now = datetime.now(UTC)
    return [
        Conversion(
            event="purchase",
            happened_at=now - timedelta(seconds=rng.randint(1, 3600)),
            value=Decimal(rng.randint(500, 50_000)) / 100,
            currency="EUR",
            event_id=f"order-{seed}-{i}",
            email=f"Customer{i}@Example.com",
            li_fat_id=f"fat-{seed}-{i}",
            epik=f"epik-{seed}-{i}",
            yandex_client_id=f"{1_700_000_000 + i}.{seed}",
            vnative_click_id=f"{seed:08x}{i:016x}",
            ip="203.0.113.7",
            user_agent="Mozilla/5.0 (demo)",
        )
        for i in range(start, start + n)
    ]
