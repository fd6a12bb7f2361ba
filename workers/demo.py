"""Sample conversion events for the embedded run and the benchmark."""

from __future__ import annotations

import random
import time
from typing import Any


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
