"""LinkedIn from zero: rules, campaigns, OAuth refresh, on real workers and the LinkedIn sandbox."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from cryptography.fernet import Fernet

from dispatcher import Conversion, Dispatcher, Settings
from dispatcher.settings import LinkedInRule, Route
from sandboxes.base import fingerprint
from tests.conftest import wait_for
from tests.pipeline.conftest import Stack, start_stack
from tests.pipeline.events import full_conversion, linkedin
from workers.linkedin_rules import RuleManager

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("fresh")]

ACCOUNT = "5123456"
RUNTIME_KEY = Fernet.generate_key().decode()
OAUTH_ENV = {
    "LI_CLIENT_ID": "app-1",
    "LI_CLIENT_SECRET": "s3cret",
    "LI_REFRESH": "refresh-1",
    "LI_REFRESH2": "refresh-2",
}
RULE = {"name": "Web purchase", "type": "PURCHASE", "campaigns": ["345396555", "345396777"]}
GRANT = {
    "client_id_env": "LI_CLIENT_ID",
    "client_secret_env": "LI_CLIENT_SECRET",
    "refresh_token_env": "LI_REFRESH",
}
CONFIG = {
    "linkedin": {
        "max_wait_s": 0.2,
        "rate_per_min": 60_000,
        "backoff_base_s": 0.2,
        "timeout_s": 3.0,
        "oauth_url": "{sandbox}/oauth/v2/accessToken",
    },
    "pause_recheck_s": 0.5,
    "destinations": {
        "li-rules": {
            "platform": "linkedin",
            "token": "token-rules",
            "ad_account_id": ACCOUNT,
            "rules": [RULE],
        },
        "li-full": {"platform": "linkedin", "token": "token-full", "allow_plain_user_info": True},
        # Two grants: each test starts with workers holding only the first token of its own
        "li-oauth": {"platform": "linkedin", "token": "first-token", "oauth": GRANT},
        "li-oauth2": {
            "platform": "linkedin",
            "token": "first-token-2",
            "oauth": GRANT | {"refresh_token_env": "LI_REFRESH2"},
        },
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    saved = {k: os.environ.get(k) for k in [*OAUTH_ENV, "CONVDISP_SECRET_KEYS"]}
    os.environ.update(OAUTH_ENV)  # the workers inherit the grant's environment variables
    os.environ["CONVDISP_SECRET_KEYS"] = RUNTIME_KEY  # and the registry's key
    try:
        yield from start_stack(
            tmp_path_factory.mktemp("linkedin-setup"), redis_url, json.loads(json.dumps(CONFIG))
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def producer_factory(stack: Stack) -> Iterator[Callable[[list[Route]], Dispatcher]]:
    made: list[Dispatcher] = []

    def make(routes: list[Route]) -> Dispatcher:
        made.append(Dispatcher(stack.settings.model_copy(update={"routes": routes})))
        return made[-1]

    yield make
    for producer in made:
        producer.close()


def with_rule(settings: Settings, **changes: object) -> Settings:
    dest = settings.destinations["li-rules"]
    rule = LinkedInRule.model_validate(RULE | changes)
    return settings.model_copy(
        update={
            "destinations": settings.destinations
            | {"li-rules": dest.model_copy(update={"rules": [rule]})}
        }
    )


def associations(stack: Stack) -> set[tuple[str, str]]:
    found = stack.sandbox.get("linkedin/associations")["associations"]
    return {(a["campaign"], a["conversion"]) for a in found}


def test_ensure_creates_then_leaves_alone_then_updates(stack: Stack) -> None:
    # Given an ad account with no rules
    changed_settings = with_rule(stack.settings, post_click_days=90)
    with RuleManager(stack.settings) as manager, RuleManager(changed_settings) as other:
        # When ensure runs three times: first, again unchanged, then with a 90-day click window
        created = manager.ensure("li-rules")
        again = manager.ensure("li-rules")
        changed = other.ensure("li-rules")
        (rule,) = manager.find("li-rules")
    # Then it created the rule once, then found it and left it, then updated only that field
    assert [e.action for e in created + again + changed] == ["created", "unchanged", "updated"]
    assert changed[0].changed == ["postClickAttributionWindowSize"]
    assert created[0].urn == again[0].urn == changed[0].urn
    assert (rule["name"], rule["type"], rule["conversionMethod"]) == (
        "Web purchase", "PURCHASE", "CONVERSIONS_API",
    )  # fmt: skip
    assert rule["postClickAttributionWindowSize"] == 90
    posts = [
        c
        for c in stack.sandbox.calls()
        if c["method"] == "POST" and c["path"] == "/rest/conversions"
    ]
    assert len(posts) == 1


def test_three_campaigns_are_associated_in_one_request(stack: Stack) -> None:
    # Given a rule
    with RuleManager(stack.settings) as manager:
        (done,) = manager.ensure("li-rules")
        before = len(stack.sandbox.calls())
        # When three campaigns are associated with it
        n = manager.associate("li-rules", done.urn, ["1", "2", "urn:li:sponsoredCampaign:3"])
    # Then one batch PUT carried all three, and LinkedIn holds each pair
    puts = [c for c in stack.sandbox.calls()[before:] if c["method"] == "PUT"]
    assert n == 3
    assert len(puts) == 1
    assert {(f"urn:li:sponsoredCampaign:{i}", done.urn) for i in "123"} <= associations(stack)


def test_events_routed_by_rule_name_are_delivered(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    # Given ensure ran (it also associated the rule's configured campaigns)
    with RuleManager(stack.settings) as manager:
        (done,) = manager.ensure("li-rules")
    assert {(f"urn:li:sponsoredCampaign:{c}", done.urn) for c in RULE["campaigns"]} <= (
        associations(stack)
    )
    routes = [Route(event="purchase", destination="li-rules", rule="Web purchase")]
    producer = request.getfixturevalue("producer_factory")(routes)
    # When conversions name the rule only through the route
    for i in range(3):
        receipt = producer.enqueue_conversion(
            Conversion(
                event="purchase",
                happened_at=datetime.now(UTC) - timedelta(minutes=1),
                email=f"user{i}@example.com",
                event_id=f"named-{i}",
            )
        )
        assert receipt.skipped == []
    # Then LinkedIn received them for that rule's URN
    wait_for(lambda: len(stack.sandbox.event_ids()) == 3, 30, "3 events")
    events = stack.sandbox.get("events?fields=conversion")
    assert {e["conversion"] for e in events} == {done.urn}


def oauth_sandbox(stack: Stack, refresh_token: str = "refresh-1", **extra: object) -> None:  # noqa: S107
    stack.sandbox.control(
        "config",
        {"oauth_client_id": "app-1", "oauth_client_secret": "s3cret",
         "oauth_refresh_token": refresh_token, **extra},
    )  # fmt: skip


def test_a_token_expiring_mid_run_is_refreshed_once_for_all_workers(stack: Stack) -> None:
    # Given two workers delivering with the first access token
    oauth_sandbox(stack)
    stack.dispatcher.enqueue_many([linkedin(i, "early") for i in range(200)], "li-oauth")
    wait_for(lambda: len(stack.sandbox.event_ids()) == 200, 30, "the first 200")
    # When the token expires mid-run and more events keep coming, to both workers
    stack.sandbox.control("config", {"expired_tokens": ["first-token"]})
    for part in range(10):
        stack.dispatcher.enqueue_many([linkedin(i, f"late{part}") for i in range(100)], "li-oauth")
    # Then everything arrives exactly once, after one refresh, and nothing paused
    wait_for(lambda: len(stack.sandbox.event_ids()) >= 1200, 60, "all 1,200 events")
    wait_for(lambda: stack.backlog("li-oauth") == 0, 30, "the stream to empty")
    counts = Counter(stack.sandbox.event_ids())
    assert len(counts) == 1200
    assert set(counts.values()) == {1}
    assert stack.sandbox.get("oauth")["refreshes"] == 1
    status = stack.control.status("li-oauth")
    assert not status.paused
    # And the refresh token's end, as LinkedIn's answer gave it (365 days from the
    # sandbox's authorization), is what status shows
    left_days = (status.refresh_token_expires_at - time.time()) / 86_400
    assert 364 < left_days <= 365


def test_a_failing_refresh_pauses_with_the_reason_and_resumes_when_it_works(
    stack: Stack,
) -> None:
    # Given the first token has expired and LinkedIn refuses the refresh
    oauth_sandbox(stack, "refresh-2", expired_tokens=["first-token-2"], oauth_fail=400)
    stack.dispatcher.enqueue_many([linkedin(i, "held") for i in range(50)], "li-oauth2")
    # When the workers try to deliver
    wait_for(lambda: stack.control.status("li-oauth2").paused, 30, "the destination to pause")
    # Then the pause says why, in LinkedIn's words, and nothing was delivered or lost
    reason = stack.control.status("li-oauth2").pause_reason
    assert "OAuth refresh refused (400): invalid_grant" in reason
    assert stack.sandbox.event_ids() == []
    assert stack.backlog("li-oauth2") == 50
    # And when the refresh works again, the destination resumes by itself and delivers all
    stack.sandbox.control("config", {"oauth_fail": None})
    wait_for(lambda: len(stack.sandbox.event_ids()) == 50, 60, "the 50 held events")
    assert not stack.control.status("li-oauth2").paused


def test_linkedins_user_info_and_external_ids_reach_its_request(
    stack: Stack, producer_factory: Callable[[list[Route]], Dispatcher]
) -> None:
    # Given a purchase with names, company, title, country and an external id
    route = Route(
        event="purchase", destination="li-full", conversion="urn:lla:llaPartnerConversion:9"
    )
    assert producer_factory([route]).enqueue_conversion(full_conversion()).skipped == []
    # When it is delivered, LinkedIn got the whole userInfo and externalIds
    wait_for(lambda: len(stack.sandbox.get("events")) == 1, 30, "the event")
    (event,) = stack.sandbox.get("events")
    assert event["user"]["userInfo"] == {
        "firstName": "Jane", "lastName": "Doe", "companyName": "Acme", "title": "Buyer",
        "countryCode": "DE",
    }  # fmt: skip
    assert event["user"]["externalIds"] == ["crm-77"]
    assert event["conversionValue"] == {"currencyCode": "EUR", "amount": "49.90"}


def test_a_destination_added_at_runtime_gets_events_and_token_updates_without_restart(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given running workers that have never heard of the destination (its token sealed)
    monkeypatch.setenv("CONVDISP_SECRET_KEYS", RUNTIME_KEY)
    with Dispatcher(stack.settings.model_copy()) as admin:
        admin.registry.add("li-runtime", {"platform": "linkedin", "token": "runtime-1"})
        # When events are enqueued for it
        admin.enqueue_many([linkedin(i, "rt1") for i in range(20)], "li-runtime")
        # Then the workers deliver them within seconds, with its token
        wait_for(lambda: len(stack.sandbox.event_ids()) == 20, 15, "the first 20")
        first = {c["token_fingerprint"] for c in stack.sandbox.calls()}
        # And after a token update, the workers take it up within registry_refresh_s
        admin.registry.update("li-runtime", token="runtime-2")
        updated = fingerprint("runtime-2")
        sent = [20]

        def new_token_used() -> bool:
            admin.enqueue_many([linkedin(i, f"rt2-{sent[0]}") for i in range(10)], "li-runtime")
            sent[0] += 10
            return updated in {c["token_fingerprint"] for c in stack.sandbox.calls()}

        wait_for(new_token_used, 15, "a call with the updated token")
        calls = stack.sandbox.calls()
        switched_s = min(c["at_s"] for c in calls if c["token_fingerprint"] == updated)
        # And from a refresh interval later on, every worker's calls carry only the new one
        settled_s = switched_s + 2 * stack.settings.registry_refresh_s

        def calls_after_the_interval() -> list[dict[str, object]]:
            admin.enqueue_many([linkedin(i, f"rt3-{sent[0]}") for i in range(10)], "li-runtime")
            sent[0] += 10
            return [c for c in stack.sandbox.calls() if c["at_s"] > settled_s]

        late = cast(list[dict[str, object]], wait_for(calls_after_the_interval, 20, "later calls"))
        assert {c["token_fingerprint"] for c in late} == {updated}
        wait_for(lambda: len(stack.sandbox.event_ids()) == sent[0], 15, "every event")
        assert {c["token_fingerprint"] for c in stack.sandbox.calls()} == first | {updated}
        admin.registry.remove("li-runtime", "keep")
