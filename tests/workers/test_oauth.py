"""OAuth refresh for LinkedIn on a real Redis, the platform scripted with httpx.MockTransport."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import redis
from prometheus_client import generate_latest

from dispatcher import ConfigurationError, Control, Destination, Dispatcher, Settings, keys
from dispatcher.settings import LinkedInSettings, OAuthRefresh
from tests.pipeline.events import linkedin
from tests.stored import stored_text
from workers.engine import DrainStatus, Engine
from workers.metrics import registry as metrics_registry
from workers.oauth import TokenStore

SECRET = "client-secret-value"
REFRESH = "refresh-token-value"


class Platform:
    """LinkedIn's API and token endpoint: accepts only the tokens it issued last."""

    def __init__(self) -> None:
        self.valid = {"first-token"}
        self.refreshes = 0
        self.refuse: tuple[int, dict[str, str]] | None = None
        self.lifetime_s = 5_184_000
        self.bearers: list[str] = []
        self.refresh_left_s = 31_000_000

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/v2/accessToken":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            assert form == {
                "grant_type": "refresh_token",
                "refresh_token": REFRESH,
                "client_id": "app-id",
                "client_secret": SECRET,
            }
            if self.refuse is not None:
                return httpx.Response(self.refuse[0], json=self.refuse[1])
            self.refreshes += 1
            token = f"issued-{self.refreshes}"
            self.valid = {token}
            return httpx.Response(
                200,
                json={
                    "access_token": token,
                    "expires_in": self.lifetime_s,
                    "refresh_token": REFRESH,
                    "refresh_token_expires_in": self.refresh_left_s,
                },
            )
        bearer = request.headers["authorization"].removeprefix("Bearer ")
        self.bearers.append(bearer)
        if bearer not in self.valid:
            body = {"status": 401, "serviceErrorCode": 65602, "code": "EXPIRED_ACCESS_TOKEN"}
            return httpx.Response(401, json=body)
        n = len(json.loads(request.content)["elements"])
        return httpx.Response(200, json={"elements": [{"status": 201}] * n})


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LI_CLIENT_ID", "app-id")
    monkeypatch.setenv("LI_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("LI_REFRESH", REFRESH)


@pytest.fixture
def oauth_settings(settings: Settings, env: None) -> Settings:
    grant = OAuthRefresh(
        client_id_env="LI_CLIENT_ID",
        client_secret_env="LI_CLIENT_SECRET",
        refresh_token_env="LI_REFRESH",
    )
    dest = Destination(platform="linkedin", token="first-token", oauth=grant)
    table = LinkedInSettings(
        base_url="http://li.test",
        oauth_url="http://li.test/oauth/v2/accessToken",
        max_wait_s=0,
        rate_per_min=6e6,
    )
    return settings.model_copy(update={"linkedin": table, "destinations": {"li-main": dest}})


@pytest.fixture
def platform() -> Platform:
    return Platform()


def worker(settings: Settings, client: redis.Redis, platform: Platform) -> Engine:
    http = httpx.Client(transport=httpx.MockTransport(platform))
    return Engine(
        settings, client, http, consumer="test", sleep=lambda _: None, rng=random.Random(1)
    )


def enqueue(settings: Settings, n: int, tag: str) -> None:
    with Dispatcher(settings) as producer:
        producer.enqueue_many([linkedin(i, tag) for i in range(n)], "li-main")


def test_a_refused_token_is_refreshed_once_and_the_batch_sent_again(
    oauth_settings: Settings, redis_client: redis.Redis, platform: Platform
) -> None:
    # Given a first access token that LinkedIn no longer takes
    platform.valid = set()
    enqueue(oauth_settings, 3, "a")
    # When a worker drains
    report = worker(oauth_settings, redis_client, platform).drain("li-main")
    # Then it refreshed once, sent again with the new token, and nothing waits or paused
    assert platform.refreshes == 1
    assert platform.bearers == ["first-token", "issued-1"]
    assert (report.status, report.delivered) == (DrainStatus.SENT, 3)
    assert not redis_client.hget(keys.state("li-main"), "paused")


def test_every_worker_uses_the_one_refreshed_token(
    oauth_settings: Settings, redis_client: redis.Redis, platform: Platform
) -> None:
    # Given two workers (two token stores) that both start with the refused first token
    platform.valid = set()
    first, second = (worker(oauth_settings, redis_client, platform) for _ in range(2))
    enqueue(oauth_settings, 2, "b1")
    first.drain("li-main")
    # When the second one meets the same 401
    enqueue(oauth_settings, 2, "b2")
    report = second.drain("li-main")
    # Then it takes the token the first one refreshed instead of refreshing again
    assert platform.refreshes == 1
    assert platform.bearers[-1] == "issued-1"
    assert report.delivered == 2


def test_redis_never_holds_a_token_in_the_clear(
    oauth_settings: Settings, redis_client: redis.Redis, platform: Platform
) -> None:
    # Given a refresh has happened
    platform.valid = set()
    enqueue(oauth_settings, 1, "c")
    worker(oauth_settings, redis_client, platform).drain("li-main")
    # When every key and value in Redis is read
    dump = b""
    for key in redis_client.scan_iter():
        dump += key + (redis_client.dump(key) or b"")
        if redis_client.type(key) == b"hash":
            dump += b"".join(b"".join(kv) for kv in redis_client.hgetall(key).items())
    # Then neither the access token nor the refresh token nor the secret is there
    assert b"issued-1" not in dump
    assert REFRESH.encode() not in dump
    assert SECRET.encode() not in dump
    assert redis_client.hget(keys.oauth("linkedin", dest_fp(oauth_settings)), "refreshes") == b"1"


def dest_fp(settings: Settings) -> str:
    return settings.destinations["li-main"].fingerprint()


def test_a_failing_refresh_pauses_with_the_reason_and_resumes_when_it_works(
    oauth_settings: Settings, redis_client: redis.Redis, platform: Platform
) -> None:
    # Given LinkedIn refuses the refresh token
    platform.valid = set()
    platform.refuse = (
        400,
        {"error": "invalid_grant", "error_description": "The refresh token has expired"},
    )
    enqueue(oauth_settings, 2, "d")
    eng = worker(oauth_settings, redis_client, platform)
    # When a worker drains
    report = eng.drain("li-main")
    # Then the destination pauses with LinkedIn's words, and no secret in them
    reason = redis_client.hget(keys.state("li-main"), "pause_reason") or b""
    assert report.status is DrainStatus.PAUSED
    assert b"invalid_grant" in reason
    assert b"The refresh token has expired" in reason
    assert REFRESH.encode() not in reason
    assert SECRET.encode() not in reason
    # And when the refresh works again, the pause re-check resumes and delivers
    platform.refuse = None
    redis_client.zadd(keys.due("linkedin"), {"li-main": 0})
    report = eng.drain("li-main")
    assert (report.status, report.delivered) == (DrainStatus.SENT, 2)
    assert not redis_client.hget(keys.state("li-main"), "paused")


@pytest.mark.parametrize(
    "description",
    [f"refresh failed for refresh_token={REFRESH}&client_secret={SECRET}", f"secret {SECRET}"],
)
def test_a_token_endpoint_echoing_the_form_leaves_no_secret_in_the_reason(
    oauth_settings: Settings, redis_client: redis.Redis, platform: Platform, description: str
) -> None:
    # Given a token endpoint whose refusal quotes the refresh request back
    platform.valid = set()
    platform.refuse = (400, {"error": "invalid_request", "error_description": description})
    enqueue(oauth_settings, 1, "e")
    # When a worker drains, and the refresh is refused
    assert worker(oauth_settings, redis_client, platform).drain("li-main").status == "paused"
    # Then the pause reason keeps the endpoint's words, the secrets as ***
    reason = (redis_client.hget(keys.state("li-main"), "pause_reason") or b"").decode()
    assert "invalid_request" in reason
    assert "***" in reason
    stored = stored_text(redis_client)
    assert REFRESH not in stored
    assert SECRET not in stored


def test_a_token_is_refreshed_before_it_expires(
    oauth_settings: Settings, redis_client: redis.Redis, platform: Platform
) -> None:
    # Given a grant with no first token and tokens that live 100 s
    dest = oauth_settings.destinations["li-main"].model_copy(update={"token": None})
    platform.lifetime_s = 100
    now = [1_000.0]
    http = httpx.Client(transport=httpx.MockTransport(platform))
    store = TokenStore(redis_client, http, oauth_settings, clock=lambda: now[0])
    # When the token is asked for, then again at 40 s and at 60 s (past half its life)
    first = store.current(dest)
    now[0] += 40
    still = store.current(dest)
    now[0] += 20
    renewed = store.current(dest)
    # Then the first use refreshed, the second reused, the third refreshed ahead of expiry
    assert (first, still, renewed) == ("issued-1", "issued-1", "issued-2")
    assert store.refreshes(dest) == 2


def test_a_token_endpoint_outage_is_a_reason_not_a_crash(
    oauth_settings: Settings, redis_client: redis.Redis, platform: Platform
) -> None:
    # Given the token endpoint answers 500 with an HTML page
    platform.valid = set()
    platform.refuse = (500, {"error": "server_error"})
    enqueue(oauth_settings, 1, "e")
    # When a worker drains
    report = worker(oauth_settings, redis_client, platform).drain("li-main")
    # Then the destination pauses naming the refresh, and the event still waits
    reason = redis_client.hget(keys.state("li-main"), "pause_reason") or b""
    assert report.status is DrainStatus.PAUSED
    assert reason.startswith(b"OAuth refresh refused (500)")
    assert redis_client.xlen(keys.stream("li-main")) == 1


def clocked(
    settings: Settings, client: redis.Redis, platform: Platform, left_days: int
) -> tuple[Destination, TokenStore, list[float]]:
    """A grant with no first token, refresh answers giving the refresh token `left_days`
    more, and a store on a clock the test moves (`now[0]`)."""
    dest = settings.destinations["li-main"].model_copy(update={"token": None})
    platform.refresh_left_s = left_days * 86_400
    now = [1_800_000_000.0]
    http = httpx.Client(transport=httpx.MockTransport(platform))
    return dest, TokenStore(client, http, settings, clock=lambda: now[0]), now


def test_the_refresh_tokens_end_is_kept_shown_and_warned_of(
    oauth_settings: Settings,
    redis_client: redis.Redis,
    platform: Platform,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a refresh answer that gives the refresh token 20 days more (warning: 30 days)
    dest, store, now = clocked(oauth_settings, redis_client, platform, 20)
    # When the token is asked for, again the same day, and again a day later
    with caplog.at_level("WARNING", logger="workers.oauth"):
        store.current(dest)
        store.current(dest)
        now[0] += 86_400
        store.current(dest)
    # Then the end is in the grant's record, and a warning named the variable, the days
    # and the date, once a day, with no secret in it
    record = keys.oauth("linkedin", dest_fp(oauth_settings))
    ends = float(redis_client.hget(record, keys.OAUTH_REFRESH_EXPIRES_AT) or 0)
    assert ends == 1_800_000_000.0 + 20 * 86_400
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "$LI_REFRESH expires in 20 days (2027-02-04)" in warnings[0]
    assert "expires in 19 days" in warnings[1]
    assert not any(REFRESH in w or SECRET in w for w in warnings)
    # And status and the metrics show when it ends
    with Dispatcher(oauth_settings) as producer:
        assert Control(producer).status("li-main").refresh_token_expires_at == ends
    text = generate_latest(metrics_registry(oauth_settings, redis_client)).decode()
    gauge = "convdispatch_oauth_refresh_token_expiry_timestamp_seconds"
    assert f'{gauge}{{destination="li-main",platform="linkedin"}} 1.801728e+09' in text


def test_a_refresh_token_far_from_its_end_is_not_warned_of(
    oauth_settings: Settings,
    redis_client: redis.Redis,
    platform: Platform,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a refresh token with 300 days left (and access tokens that outlive the test)
    platform.lifetime_s = 400 * 86_400
    dest, store, now = clocked(oauth_settings, redis_client, platform, 300)
    # When it is used
    with caplog.at_level("WARNING", logger="workers.oauth"):
        store.current(dest)
        # Then no warning, until 30 days before its end
        assert not caplog.records
        now[0] += 271 * 86_400
        store.current(dest)
    assert [r.getMessage() for r in caplog.records][-1].count("expires in 29 days") == 1
    assert store.refreshes(dest) == 1


def test_a_refused_refresh_after_the_refresh_tokens_end_says_it_ended(
    oauth_settings: Settings, redis_client: redis.Redis, platform: Platform
) -> None:
    # Given a refresh token known to end in 2 days, and then those days passed
    dest, store, now = clocked(oauth_settings, redis_client, platform, 2)
    store.current(dest)
    now[0] += 3 * 86_400
    platform.refuse = (400, {"error": "invalid_grant", "error_description": "expired"})
    # When the next refresh is refused
    with pytest.raises(ConfigurationError) as refused:
        store.refused(dest, "issued-1")
    # Then the reason has LinkedIn's words and says the refresh token ended, and when
    reason = str(refused.value)
    assert reason.startswith("OAuth refresh refused (400): invalid_grant: expired")
    assert "the refresh token in $LI_REFRESH expired on 2027-01-17" in reason
    assert "authorize the app again" in reason


def test_status_shows_a_refresh_token_near_its_end(
    oauth_settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given the grant's record says its refresh token ends in 10 days
    record = keys.oauth("linkedin", dest_fp(oauth_settings))
    redis_client.hset(record, keys.OAUTH_REFRESH_EXPIRES_AT, time.time() + 10.2 * 86_400)
    grant = {"client_id_env": "LI_CLIENT_ID", "client_secret_env": "LI_CLIENT_SECRET"}
    grant["refresh_token_env"] = "LI_REFRESH"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVDISP_")} | {
        "CONVDISP_CONFIG": str(tmp_path / "none.toml"),
        "CONVDISP_REDIS_URL": oauth_settings.redis_url,
        "CONVDISP_DESTINATIONS": json.dumps({"li-main": {"platform": "linkedin", "oauth": grant}}),
        "COLUMNS": "250",
    }
    (tmp_path / "none.toml").write_text("")
    # When an operator asks for the status
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "status"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # Then the destination's state says so, and no secret shows
    assert done.returncode == 0, done.stderr
    assert "ok; refresh token expires in 10 days" in done.stdout
    assert REFRESH not in done.stdout
    assert SECRET not in done.stdout
