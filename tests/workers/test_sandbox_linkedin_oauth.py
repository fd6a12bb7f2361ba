"""The LinkedIn sandbox's OAuth token endpoint and access-token expiry, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandboxes.base import RunningServer, fingerprint
from tests.workers.conftest import Clock, linkedin_headers, serve_linkedin

DAY_S = 86_400
GRANT = {
    "oauth_client_id": "client-1",
    "oauth_client_secret": "secret-1",
    "oauth_refresh_token": "refresh-1",
}
FORM = {
    "grant_type": "refresh_token",
    "refresh_token": "refresh-1",
    "client_id": "client-1",
    "client_secret": "secret-1",
}
EXPIRED = {
    "status": 401,
    "serviceErrorCode": 65602,
    "code": "EXPIRED_ACCESS_TOKEN",
    "message": "The token used in the request has expired",
}


CLOCK = Clock()


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    yield from serve_linkedin(CLOCK)


def refresh(client: httpx.Client, **changes: Any) -> httpx.Response:
    """A refresh as the product sends it: form-encoded, no LinkedIn headers."""
    form = {k: v for k, v in (FORM | changes).items() if v is not None}
    return client.post("/oauth/v2/accessToken", data=form)


def call(client: httpx.Client, token: str) -> httpx.Response:
    """One conversion event sent with `token`."""
    event = {
        "conversion": "urn:lla:llaPartnerConversion:123",
        "conversionHappenedAt": int(CLOCK() * 1000) - 60_000,
        "user": {"userIds": [{"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "x"}]},
    }
    # the version of the (moved) sandbox month: an older one would be sunset by then
    version = time.strftime("%Y%m", time.gmtime(CLOCK()))
    sent = linkedin_headers(token=token) | {"LinkedIn-Version": version}
    return client.post("/rest/conversionEvents", json=event, headers=sent)


def tallies(client: httpx.Client) -> dict[str, int]:
    answer: dict[str, int] = client.get("/_sandbox/oauth").json()
    return answer


def test_a_refresh_issues_a_token_that_the_api_accepts(client: httpx.Client) -> None:
    # Given a sandbox that knows the client and its refresh token
    client.post("/_sandbox/config", json=GRANT).raise_for_status()
    # When the product refreshes
    response = refresh(client)
    # Then LinkedIn's answer has a new 60-day token and the same, unextended refresh token
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 60 * DAY_S
    assert body["refresh_token"] == "refresh-1"
    assert body["refresh_token_expires_in"] == 365 * DAY_S
    assert body["access_token"] not in ("", "refresh-1")
    assert response.headers["cache-control"] == "no-store"
    # And the new token works on the API, and the refresh was counted
    assert call(client, body["access_token"]).status_code == 201
    assert tallies(client) == {"refreshes": 1, "refused": 0}


def test_refreshing_neither_rotates_nor_extends_the_refresh_token(client: httpx.Client) -> None:
    # Given a refresh token authorized now
    client.post("/_sandbox/config", json=GRANT).raise_for_status()
    start_s = CLOCK.now_s
    # When it is used on day 59, on day 360, and after its 365 days
    CLOCK.now_s = start_s + 59 * DAY_S
    day_59 = refresh(client).json()
    CLOCK.now_s = start_s + 360 * DAY_S
    day_360 = refresh(client).json()
    CLOCK.now_s = start_s + 365 * DAY_S
    day_365 = refresh(client)
    # Then its lifetime runs down from authorization, as LinkedIn's docs count it
    assert (day_59["expires_in"], day_59["refresh_token_expires_in"]) == (60 * DAY_S, 306 * DAY_S)
    assert (day_360["expires_in"], day_360["refresh_token_expires_in"]) == (5 * DAY_S, 5 * DAY_S)
    assert day_59["refresh_token"] == day_360["refresh_token"] == "refresh-1"
    assert day_365.status_code == 400
    assert day_365.json()["error"] == "invalid_grant"
    assert tallies(client) == {"refreshes": 2, "refused": 1}


@pytest.mark.parametrize(
    ("changes", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "client-2"}, 401, "invalid_client"),
        ({"refresh_token": "refresh-2"}, 400, "invalid_grant"),
        ({"grant_type": "authorization_code"}, 400, "invalid_request"),
    ],
)
def test_a_refresh_with_wrong_credentials_is_refused(
    client: httpx.Client, changes: dict[str, str], status: int, error: str
) -> None:
    # Given a sandbox that knows the client and its refresh token
    client.post("/_sandbox/config", json=GRANT).raise_for_status()
    # When a refresh is sent with one field wrong
    response = refresh(client, **changes)
    # Then it is refused in the OAuth format, and counted as refused
    assert response.status_code == status
    assert response.json()["error"] == error
    assert set(response.json()) == {"error", "error_description"}
    assert tallies(client) == {"refreshes": 0, "refused": 1}


def test_a_refresh_missing_a_field_names_it(client: httpx.Client) -> None:
    # Given a sandbox that knows the client
    client.post("/_sandbox/config", json=GRANT).raise_for_status()
    # When a refresh is sent without client_secret
    response = refresh(client, client_secret=None)
    # Then LinkedIn's invalid_request names the parameter
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": 'A required parameter "client_secret" is missing',
    }


def test_without_a_configured_grant_every_refresh_is_refused(client: httpx.Client) -> None:
    # Given a sandbox that knows the client but no refresh token, and one that knows nothing
    client.post("/_sandbox/config", json=GRANT | {"oauth_refresh_token": None})
    no_token = refresh(client)
    client.post("/_sandbox/reset").raise_for_status()
    nothing = refresh(client)
    # Then both refreshes are refused
    assert no_token.status_code == 400
    assert no_token.json()["error"] == "invalid_grant"
    assert nothing.status_code == 401
    assert nothing.json()["error"] == "invalid_client"


def test_oauth_fail_makes_the_endpoint_fail_until_cleared(client: httpx.Client) -> None:
    # Given a valid grant and an endpoint told to fail with 500, then with 400
    client.post("/_sandbox/config", json=GRANT | {"oauth_fail": 500}).raise_for_status()
    server_error = refresh(client)
    client.post("/_sandbox/config", json={"oauth_fail": 400}).raise_for_status()
    grant_error = refresh(client)
    # When the failure is cleared
    client.post("/_sandbox/config", json={"oauth_fail": None}).raise_for_status()
    working = refresh(client)
    # Then it answered 500 as a server error, 400 as invalid_grant, then a token
    assert server_error.status_code == 500
    assert server_error.json()["error"] == "server_error"
    assert grant_error.status_code == 400
    assert grant_error.json()["error"] == "invalid_grant"
    assert working.status_code == 200
    assert tallies(client) == {"refreshes": 1, "refused": 2}


def test_an_issued_token_expires_on_the_sandbox_clock(client: httpx.Client) -> None:
    # Given tokens that live an hour, and one issued now
    client.post("/_sandbox/config", json=GRANT | {"access_token_ttl_s": 3600}).raise_for_status()
    first = refresh(client).json()
    assert first["expires_in"] == 3600
    # When it is used just before and just after the hour, and a fresh one after that
    CLOCK.now_s += 3599
    before = call(client, first["access_token"])
    CLOCK.now_s += 1
    after = call(client, first["access_token"])
    second = refresh(client).json()["access_token"]
    fresh = call(client, second)
    # Then only the expired use is refused, with the expired-token 401, and nothing recorded
    assert before.status_code == 201
    assert after.status_code == 401
    assert after.json() == EXPIRED
    assert fresh.status_code == 201
    statuses = [c["status"] for c in client.get("/_sandbox/calls").json()]
    assert statuses == [201, 401, 201]
    assert len(client.get("/_sandbox/received").json()) == 2


def test_listed_tokens_are_expired_and_unknown_ones_still_accepted(
    client: httpx.Client,
) -> None:
    # Given a token listed as expired
    client.post("/_sandbox/config", json={"expired_tokens": ["stale"]}).raise_for_status()
    # When it and a token the sandbox never issued are used
    stale, unknown = call(client, "stale"), call(client, "token-from-elsewhere")
    # Then the listed one gets the expired-token 401 and the other is accepted as before
    assert stale.status_code == 401
    assert stale.json() == EXPIRED
    assert unknown.status_code == 201
    calls = client.get("/_sandbox/calls").json()
    assert calls[0]["token_fingerprint"] == fingerprint("stale")


def test_the_oauth_config_is_shown_checked_and_reset(client: httpx.Client) -> None:
    # Given a configured grant and a refused refresh
    client.post("/_sandbox/config", json=GRANT | {"expired_tokens": ["t"]}).raise_for_status()
    refresh(client, client_secret="wrong")
    # When the config is read, bad values are posted, and the sandbox is reset
    shown = client.get("/_sandbox/config").json()
    bad_fail = client.post("/_sandbox/config", json={"oauth_fail": 200})
    bad_list = client.post("/_sandbox/config", json={"expired_tokens": "t"})
    bad_ttl = client.post("/_sandbox/config", json={"access_token_ttl_s": 0})
    counted = tallies(client)
    client.post("/_sandbox/reset").raise_for_status()
    # Then the fields are shown, bad values are refused naming them, and a reset clears all
    assert shown | GRANT == shown
    assert shown["access_token_ttl_s"] == 60 * DAY_S
    assert shown["expired_tokens"] == ["t"]
    assert shown["oauth_fail"] is None
    assert [r.status_code for r in (bad_fail, bad_list, bad_ttl)] == [400, 400, 400]
    assert "oauth_fail" in bad_fail.json()["message"]
    assert counted == {"refreshes": 0, "refused": 1}
    assert tallies(client) == {"refreshes": 0, "refused": 0}
    after = client.get("/_sandbox/config").json()
    assert after["oauth_client_id"] is None
    assert after["expired_tokens"] == []
