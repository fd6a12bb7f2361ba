"""The offline checks and the pause a worker applies at start (real Redis)."""

from __future__ import annotations

import pytest
import redis

from dispatcher import Control, Destination, Dispatcher, Settings, keys
from dispatcher.check import credential_findings, redis_findings, route_findings
from dispatcher.settings import Route
from tests.pipeline.events import linkedin
from workers import app as worker_app
from workers.engine import DrainStatus, Engine


@pytest.fixture
def unset(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("LI_UNSET_TOKEN", raising=False)
    dests = settings.destinations | {
        "li-unset": Destination(platform="linkedin", token_env="LI_UNSET_TOKEN")
    }
    table = settings.linkedin.model_copy(update={"max_wait_s": 0})  # partial batches go at once
    return settings.model_copy(update={"destinations": dests, "linkedin": table})


def test_a_destination_without_its_token_is_an_error_naming_the_variable(unset: Settings) -> None:
    found = {f.subject: f for f in credential_findings(unset)}
    assert found["destination li-main"].level == "ok"
    assert found["destination li-unset"].level == "error"
    assert "LI_UNSET_TOKEN" in found["destination li-unset"].message


def test_a_worker_pauses_it_at_start_and_resumes_it_once_the_variable_is_set(
    unset: Settings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a worker starting without the token's variable
    monkeypatch.setattr(worker_app, "settings", unset)
    worker_app._pause_unservable(["linkedin"])
    # Then the destination is paused with the reason operators see in `status`
    with Dispatcher(unset) as producer:
        status = Control(producer).status("li-unset")
        assert status.paused
        assert "LI_UNSET_TOKEN" in status.pause_reason
        assert not Control(producer).status("li-main").paused
        producer.enqueue(linkedin(1, "held"), "li-unset")
    # And a drain leaves it paused, sending nothing, while the variable is unset
    import httpx

    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    assert Engine(unset, redis_client, http).drain("li-unset").status is DrainStatus.PAUSED
    # And once a worker has it, the next drain resumes the destination
    monkeypatch.setenv("LI_UNSET_TOKEN", "now-set")
    sent: list[httpx.Request] = []

    def ok(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"elements": [{"status": 201}]})

    report = Engine(unset, redis_client, httpx.Client(transport=httpx.MockTransport(ok))).drain(
        "li-unset"
    )
    assert (report.status, report.delivered, len(sent)) == (DrainStatus.SENT, 1, 1)
    assert not redis_client.hget(keys.state("li-unset"), "paused")


def test_redis_without_aof_or_with_eviction_is_an_error(redis_client: redis.Redis) -> None:
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        found = redis_findings(redis_client)
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")
    assert any(f.level == "error" and "allkeys-lru" in f.message for f in found)
    assert any(f.level == "ok" and "AOF on" in f.message for f in found)


def test_a_route_naming_an_unknown_rule_is_an_error(
    settings: Settings, redis_client: redis.Redis
) -> None:
    routed = settings.model_copy(
        update={"routes": [Route(event="lead", destination="li-main", rule="Leads")]}
    )
    (finding,) = route_findings(routed, redis_client)
    assert finding.level == "error"
    assert "convdispatch linkedin ensure li-main" in finding.message
    redis_client.hset(keys.rule_names("li-main"), "Leads", "urn:lla:llaPartnerConversion:5")
    (finding,) = route_findings(routed, redis_client)
    assert finding.level == "ok"
