"""The LinkedIn sandbox's conversion rules and campaign associations, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandboxes.base import RunningServer
from tests.workers.conftest import Clock, linkedin_headers, serve_linkedin

ACCOUNT, OTHER_ACCOUNT = "urn:li:sponsoredAccount:5123456", "urn:li:sponsoredAccount:51234560"
# The seed's batch association sample, verbatim.
SEED_BATCH_URL = (
    "/rest/campaignConversions?ids=List("
    "(campaign:urn%3Ali%3AsponsoredCampaign%3A345396555,"
    "conversion:urn%3Alla%3AllaPartnerConversion%3A104004),"
    "(campaign:urn%3Ali%3AsponsoredCampaign%3A345396777,"
    "conversion:urn%3Alla%3AllaPartnerConversion%3A104004))"
)
KEY_555 = (
    "(campaign:urn%3Ali%3AsponsoredCampaign%3A345396555,"
    "conversion:urn%3Alla%3AllaPartnerConversion%3A104004)"
)
KEY_777 = KEY_555.replace("345396555", "345396777")
SEED_ENTITIES = {
    KEY_555: {
        "campaign": "urn:li:sponsoredCampaign:345396555",
        "conversion": "urn:lla:llaPartnerConversion:104004",
    },
    KEY_777: {
        "campaign": "urn:li:sponsoredCampaign:345396777",
        "conversion": "urn:lla:llaPartnerConversion:104004",
    },
}


CLOCK = Clock()


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    yield from serve_linkedin(CLOCK)


def rule(**changes: Any) -> dict[str, Any]:
    """The seed's sample rule, changed; a change to None leaves the field out."""
    sample = {
        "name": "Conversion API Segment 1",
        "account": ACCOUNT,
        "conversionMethod": "CONVERSIONS_API",
        "postClickAttributionWindowSize": 30,
        "viewThroughAttributionWindowSize": 7,
        "attributionType": "LAST_TOUCH_BY_CAMPAIGN",
        "type": "LEAD",
        **changes,
    }
    return {key: value for key, value in sample.items() if value is not None}


def create(client: httpx.Client, **changes: Any) -> int:
    response = client.post("/rest/conversions", json=rule(**changes), headers=linkedin_headers())
    assert response.status_code == 201, response.text
    rule_id: int = response.json()["id"]
    return rule_id


def patch(client: httpx.Client, rule_id: int | str, changes: Any) -> httpx.Response:
    body = {"patch": {"$set": changes}}
    return client.post(
        f"/rest/conversions/{rule_id}", json=body, headers=linkedin_headers("PARTIAL_UPDATE")
    )


def get(client: httpx.Client, rule_id: int | str) -> httpx.Response:
    return client.get(f"/rest/conversions/{rule_id}", headers=linkedin_headers())


def associations(client: httpx.Client) -> list[dict[str, str]]:
    answer: list[dict[str, str]] = client.get("/_sandbox/linkedin/associations").json()[
        "associations"
    ]
    return answer


# -- rules: lookup and update ----------------------------------------------------------------


def test_a_created_rule_is_read_back_by_id(client: httpx.Client) -> None:
    # Given a rule created from the seed's sample without optional fields
    rule_id = create(client, postClickAttributionWindowSize=None, attributionType=None)
    # When it is read by id
    response = get(client, rule_id)
    # Then it has the seed's fields, LinkedIn's defaults and the creation stamps
    assert response.status_code == 200
    body = response.json()
    assert body["postClickAttributionWindowSize"] == 30
    assert body["attributionType"] == "LAST_TOUCH_BY_CAMPAIGN"
    assert body["id"] == rule_id
    assert body["account"] == ACCOUNT
    assert body["type"] == "LEAD"
    assert body["enabled"] is True
    assert body["conversionMethod"] == "CONVERSIONS_API"
    assert body["created"] == body["lastModified"] == int(CLOCK() * 1000)


def test_an_unknown_rule_is_404_and_a_malformed_id_400(client: httpx.Client) -> None:
    # Given no rules at all
    # When an unknown id and a non-numeric one are read, and the unknown one patched
    unknown, malformed = get(client, 999_999), get(client, "abc")
    patched = patch(client, 999_999, {"name": "x"})
    # Then LinkedIn-style errors come back
    assert unknown.status_code == patched.status_code == 404
    assert unknown.json()["status"] == 404
    assert malformed.status_code == 400


def test_a_partial_update_changes_the_rule_and_its_last_modified(client: httpx.Client) -> None:
    # Given a rule
    rule_id = create(client)
    created = get(client, rule_id).json()
    CLOCK.now_s += 5
    # When its name, window, attribution and state are set by a PARTIAL_UPDATE
    changes = {
        "name": "Renamed",
        "postClickAttributionWindowSize": 90,
        "attributionType": "LAST_TOUCH_BY_CONVERSION",
        "enabled": False,
    }
    response = patch(client, rule_id, changes)
    # Then it is 204 without a body, and the rule has changed only there
    assert response.status_code == 204
    assert response.content == b""
    after = get(client, rule_id).json()
    assert after == created | changes | {"lastModified": created["lastModified"] + 5000}


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"postClickAttributionWindowSize": 14}, "1, 7, 30 or 90"),
        ({"viewThroughAttributionWindowSize": "7"}, "1, 7, 30 or 90"),
        ({"attributionType": "FIRST_TOUCH"}, "attributionType"),
        ({"enabled": "yes"}, "enabled"),
        ({"name": "  "}, "name"),
        ({"type": "lead"}, "type"),
    ],
)
def test_a_partial_update_is_validated_as_a_create_is(
    client: httpx.Client, changes: dict[str, Any], said: str
) -> None:
    # Given a rule
    rule_id = create(client)
    before = get(client, rule_id).json()
    # When a patch sets an invalid value
    response = patch(client, rule_id, changes)
    # Then it is refused like a create with that value, and the rule is unchanged
    assert response.status_code == 400
    assert said in response.json()["message"]
    assert get(client, rule_id).json() == before


def test_a_patch_setting_a_required_field_to_null_gets_rest_li_422(client: httpx.Client) -> None:
    # Given a rule
    rule_id = create(client)
    # When a patch sets its name to null
    response = patch(client, rule_id, {"name": None})
    # Then rest.li's required-field message comes back
    assert response.status_code == 422
    assert response.json()["message"] == (
        "ERROR :: /name :: field is required but not found and has no default value\n"
    )


def test_a_patch_may_not_touch_read_only_or_create_only_fields(client: httpx.Client) -> None:
    # Given a rule
    rule_id = create(client)
    # When patches try to move it to another account or change its id
    moved = patch(client, rule_id, {"account": OTHER_ACCOUNT})
    renumbered = patch(client, rule_id, {"id": 1, "conversionMethod": "CONVERSIONS_API"})
    # Then rest.li's validator refuses both
    assert moved.status_code == renumbered.status_code == 422
    assert moved.json()["message"] == (
        "ERROR :: /account :: CreateOnly field present in a partial_update request\n"
    )
    assert renumbered.json()["message"] == (
        "ERROR :: /id :: ReadOnly field present in a partial_update request\n"
        "ERROR :: /conversionMethod :: CreateOnly field present in a partial_update request\n"
    )
    assert get(client, rule_id).json()["account"] == ACCOUNT


def test_malformed_patches_and_missing_method_are_refused(client: httpx.Client) -> None:
    # Given a rule
    rule_id = create(client)
    url = f"/rest/conversions/{rule_id}"
    # When it is posted without X-RestLi-Method, without a patch, with $delete, or $set a list
    no_method = client.post(
        url, json={"patch": {"$set": {"name": "x"}}}, headers=linkedin_headers()
    )
    no_patch = client.post(url, json={"name": "x"}, headers=linkedin_headers("PARTIAL_UPDATE"))
    delete = client.post(
        url, json={"patch": {"$delete": ["name"]}}, headers=linkedin_headers("PARTIAL_UPDATE")
    )
    not_a_map = patch(client, rule_id, ["name"])
    # Then each is refused and nothing changed
    assert no_method.status_code == 400
    assert "PARTIAL_UPDATE" in no_method.json()["message"]
    assert no_patch.status_code == 422
    assert no_patch.json()["message"].startswith("ERROR :: /patch :: field is required")
    assert delete.status_code == 400
    assert "$delete" in delete.json()["message"]
    assert not_a_map.status_code == 422
    assert get(client, rule_id).json()["name"] == "Conversion API Segment 1"


def test_events_for_a_rule_disabled_by_a_patch_are_refused(client: httpx.Client) -> None:
    # Given a rule switched off by a PARTIAL_UPDATE
    rule_id = create(client)
    assert patch(client, rule_id, {"enabled": False}).status_code == 204
    event = {
        "conversion": f"urn:lla:llaPartnerConversion:{rule_id}",
        "conversionHappenedAt": int(CLOCK() * 1000) - 60_000,
        "user": {"userIds": [{"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "x"}]},
    }
    # When an event names it
    response = client.post("/rest/conversionEvents", json=event, headers=linkedin_headers())
    # Then LinkedIn's "marked as deleted" answer comes back
    assert response.status_code == 400
    assert "marked as deleted" in response.json()["message"]


def test_create_still_refuses_what_the_seed_refuses(client: httpx.Client) -> None:
    # Given rules missing a required field, with another method, or a bad auto association
    missing = {k: v for k, v in rule().items() if k != "type"}
    # When they are created
    no_type = client.post("/rest/conversions", json=missing, headers=linkedin_headers())
    pixel = client.post(
        "/rest/conversions", json=rule(conversionMethod="INSIGHT_TAG"), headers=linkedin_headers()
    )
    auto = client.post(
        "/rest/conversions",
        json=rule(),
        params={"autoAssociationType": "SOME"},
        headers=linkedin_headers(),
    )
    # Then each is refused
    assert no_type.status_code == 422
    assert no_type.json()["message"].startswith("ERROR :: /type :: field is required")
    assert pixel.status_code == auto.status_code == 400


# -- rules: the account finder's paging --------------------------------------------------------


def find(client: httpx.Client, **paging: Any) -> httpx.Response:
    params = {"q": "account", "account": ACCOUNT, **paging}
    return client.get("/rest/conversions", params=params, headers=linkedin_headers())


def test_the_finder_pages_with_start_and_count(client: httpx.Client) -> None:
    # Given 12 rules in the account and one in another
    ids = [create(client, name=f"rule {i}") for i in range(12)]
    create(client, account=OTHER_ACCOUNT)
    # When the account's rules are found without paging, then page by page
    first, rest = find(client), find(client, start=10)
    middle = find(client, start=5, count=5)
    # Then pages hold rest.li's default 10, the asked slice, and the total is the account's
    assert [r["id"] for r in first.json()["elements"]] == ids[:10]
    assert first.json()["paging"] == {"start": 0, "count": 10, "total": 12, "links": []}
    assert [r["id"] for r in rest.json()["elements"]] == ids[10:]
    assert rest.json()["paging"]["total"] == 12
    assert [r["id"] for r in middle.json()["elements"]] == ids[5:10]
    assert middle.json()["paging"] == {"start": 5, "count": 5, "total": 12, "links": []}


def test_the_finder_refuses_bad_paging(client: httpx.Client) -> None:
    # Given / When the finder is called with a negative start and a word as count
    negative, word = find(client, start=-1), find(client, count="all")
    # Then both are 400s naming the parameter
    assert negative.status_code == word.status_code == 400
    assert "start" in negative.json()["message"]
    assert "count" in word.json()["message"]


# -- campaign associations -------------------------------------------------------------------


def test_the_seeds_batch_association_is_a_rest_li_batch_update(client: httpx.Client) -> None:
    # Given the seed's sample batch request
    # When it is sent, with and without X-RestLi-Method: BATCH_UPDATE
    response = client.put(
        SEED_BATCH_URL, json={"entities": SEED_ENTITIES}, headers=linkedin_headers()
    )
    again = client.put(
        SEED_BATCH_URL, json={"entities": SEED_ENTITIES}, headers=linkedin_headers("BATCH_UPDATE")
    )
    # Then each key gets 204 in rest.li's batch answer, and both associations are recorded once
    assert response.status_code == again.status_code == 200
    expected = {"results": {KEY_555: {"status": 204}, KEY_777: {"status": 204}}, "errors": {}}
    assert response.json() == again.json() == expected
    assert associations(client) == [entity for entity in SEED_ENTITIES.values()]


def test_a_batch_whose_entities_do_not_match_its_ids_is_refused(client: httpx.Client) -> None:
    # Given entities for one key only, and entities whose key is encoded differently
    one = {KEY_555: SEED_ENTITIES[KEY_555]}
    lower = {key.replace("%3A", "%3a"): value for key, value in SEED_ENTITIES.items()}
    # When they are sent with the seed's two ids
    short = client.put(SEED_BATCH_URL, json={"entities": one}, headers=linkedin_headers())
    other = client.put(SEED_BATCH_URL, json={"entities": lower}, headers=linkedin_headers())
    # Then rest.li's mismatch answer comes back and nothing is associated
    assert short.status_code == other.status_code == 400
    assert short.json()["message"].startswith("Batch request mismatch, URI keys: '[")
    assert associations(client) == []


def test_an_entity_naming_another_campaign_fails_only_its_key(client: httpx.Client) -> None:
    # Given the seed's entities with the second naming a campaign other than its key's
    entities = {
        KEY_555: SEED_ENTITIES[KEY_555],
        KEY_777: {**SEED_ENTITIES[KEY_777], "campaign": "urn:li:sponsoredCampaign:1"},
    }
    # When they are sent
    response = client.put(SEED_BATCH_URL, json={"entities": entities}, headers=linkedin_headers())
    # Then the answer is per key: the first is associated, the second is in errors
    assert response.status_code == 200
    body = response.json()
    assert body["results"] == {KEY_555: {"status": 204}}
    assert list(body["errors"]) == [KEY_777]
    assert body["errors"][KEY_777]["status"] == 400
    assert associations(client) == [SEED_ENTITIES[KEY_555]]


@pytest.mark.parametrize(
    "url",
    [
        SEED_BATCH_URL.replace("%3A", ":"),  # URNs not encoded
        SEED_BATCH_URL.replace("%3A", "%253A"),  # encoded twice
        SEED_BATCH_URL.replace("List(", "(", 1),  # not a List
        "/rest/campaignConversions",  # no ids
        "/rest/campaignConversions?ids=List()",
        SEED_BATCH_URL.replace("sponsoredCampaign", "sponsoredAccount"),
    ],
)
def test_malformed_batch_ids_are_refused(client: httpx.Client, url: str) -> None:
    # Given a batch URL whose ids are not as the seed encodes them
    # When the seed's entities are sent to it
    response = client.put(url, json={"entities": SEED_ENTITIES}, headers=linkedin_headers())
    # Then it is refused naming the form, and nothing is associated
    assert response.status_code == 400
    assert "%3A" in response.json()["message"]
    assert associations(client) == []


def test_a_batch_without_entities_or_with_another_method_is_refused(
    client: httpx.Client,
) -> None:
    # Given / When the seed's ids are sent without entities, and as a BATCH_CREATE
    missing = client.put(SEED_BATCH_URL, json={"elements": []}, headers=linkedin_headers())
    create_method = client.put(
        SEED_BATCH_URL, json={"entities": SEED_ENTITIES}, headers=linkedin_headers("BATCH_CREATE")
    )
    # Then rest.li's 422 and a 400 come back, and nothing is associated
    assert missing.status_code == 422
    assert missing.json()["message"].startswith("ERROR :: /entities :: field is required")
    assert create_method.status_code == 400
    assert associations(client) == []


def test_a_single_association_needs_encoded_urns_and_is_listed(client: httpx.Client) -> None:
    # Given the seed's single association key, encoded and not
    key = (
        "(campaign:urn%3Ali%3AsponsoredCampaign%3A337643194,"
        "conversion:urn%3Alla%3AllaPartnerConversion%3A70203)"
    )
    body = {
        "campaign": "urn:li:sponsoredCampaign:337643194",
        "conversion": "urn:lla:llaPartnerConversion:70203",
    }
    # When both are PUT
    plain = client.put(
        f"/rest/campaignConversions/{key.replace('%3A', ':')}",
        json=body,
        headers=linkedin_headers(),
    )
    encoded = client.put(f"/rest/campaignConversions/{key}", json=body, headers=linkedin_headers())
    # Then only the encoded one is associated, with 204
    assert plain.status_code == 400
    assert encoded.status_code == 204
    assert associations(client) == [body]


def test_associations_and_auto_association_are_shown_then_reset(client: httpx.Client) -> None:
    # Given a rule created with ALL_CAMPAIGNS and the seed's batch association
    created = client.post(
        "/rest/conversions",
        json=rule(),
        params={"autoAssociationType": "ALL_CAMPAIGNS"},
        headers=linkedin_headers(),
    )
    client.put(SEED_BATCH_URL, json={"entities": SEED_ENTITIES}, headers=linkedin_headers())
    # When the control API is asked, before and after a reset
    before = client.get("/_sandbox/linkedin/associations").json()
    client.post("/_sandbox/reset").raise_for_status()
    after = client.get("/_sandbox/linkedin/associations").json()
    # Then both are shown, then forgotten
    assert before == {
        "associations": list(SEED_ENTITIES.values()),
        "auto_association": {str(created.json()["id"]): "ALL_CAMPAIGNS"},
    }
    assert after == {"associations": [], "auto_association": {}}
