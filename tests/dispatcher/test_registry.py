"""The runtime registry on a real Redis: add, update, disable, remove, routes, sealed tokens."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest
import redis
from cryptography.fernet import Fernet

from dispatcher import ConfigurationError, Control, DeadLetters, Dispatcher, Settings, keys
from dispatcher.errors import BackpressureError, StorageError, UnknownDestinationError
from dispatcher.settings import LinkedInSettings
from tests.pipeline.events import full_conversion, linkedin
from workers.engine import DrainStatus, Engine

KEY = Fernet.generate_key().decode()


@pytest.fixture
def keyed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CONVDISP_SECRET_KEYS", KEY)
    table = LinkedInSettings(base_url="http://li.test", max_wait_s=0, rate_per_min=6e6)
    return settings.model_copy(update={"linkedin": table, "registry_refresh_s": 0.0})


def worker(settings: Settings, client: redis.Redis, seen: list[str]) -> Engine:
    def platform(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        n = len(json.loads(request.content)["elements"])
        return httpx.Response(200, json={"elements": [{"status": 201}] * n})

    http = httpx.Client(transport=httpx.MockTransport(platform))
    fresh = settings.model_copy(update={"destinations": dict(settings.destinations)})
    return Engine(fresh, client, http, sleep=lambda _: None, rng=random.Random(1))


def test_a_destination_added_at_runtime_is_used_by_every_process(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    # Given a producer and a worker started before the destination existed
    with Dispatcher(keyed.model_copy()) as admin, Dispatcher(keyed.model_copy()) as producer:
        seen: list[str] = []
        engine = worker(keyed, redis_client, seen)
        # When an operator registers it
        admin.registry.add("li-new", {"platform": "linkedin", "token": "tok-1", "tenant": "acme"})
        # Then the other producer enqueues to it and the worker delivers, with its token
        producer.enqueue(linkedin(1, "rt"), "li-new")
        assert engine.drain("li-new").delivered == 1
        assert seen == ["Bearer tok-1"]
        # And an updated token is what the next call carries
        admin.registry.update("li-new", token="tok-2")
        producer.enqueue(linkedin(2, "rt"), "li-new")
        assert engine.drain("li-new").delivered == 1
        assert seen[-1] == "Bearer tok-2"
        assert producer.settings.destination("li-new").tenant == "acme"


def test_stored_tokens_are_sealed_and_keys_rotate(
    keyed: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-sealed", {"platform": "linkedin", "token": "very-secret-token"})
    stored = cast(dict[bytes, bytes], redis_client.hgetall(keys.registry_destinations()))
    dump = b"".join(stored.values())
    assert b"very-secret-token" not in dump
    # Rotation: a new key first, re-encrypt, then the old key can go
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("CONVDISP_SECRET_KEYS", f"{new},{KEY}")
    with Dispatcher(keyed.model_copy()) as admin:
        assert admin.registry.rotate() == 1
    monkeypatch.setenv("CONVDISP_SECRET_KEYS", new)
    with Dispatcher(keyed.model_copy()) as reader:
        reader.registry.sync(force=True)
        assert reader.settings.destination("li-sealed").secret() == "very-secret-token"


def test_a_token_no_key_decrypts_stops_rotation_before_anything_is_rewritten(
    keyed: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given one token sealed with the configured key and one with a key since lost
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-kept", {"platform": "linkedin", "token": "kept-token"})
    monkeypatch.setenv("CONVDISP_SECRET_KEYS", Fernet.generate_key().decode())
    with Dispatcher(keyed.model_copy()) as admin:
        admin.registry.add("li-lost", {"platform": "linkedin", "token": "lost-token"})
    before = redis_client.hgetall(keys.registry_destinations())
    # When a rotation runs with a new key and the first one only
    monkeypatch.setenv("CONVDISP_SECRET_KEYS", f"{Fernet.generate_key().decode()},{KEY}")
    with (
        Dispatcher(keyed.model_copy()) as admin,
        pytest.raises(ConfigurationError, match="li-lost: nothing re-encrypted") as caught,
    ):
        admin.registry.rotate()
    # Then it names the destination, shows no token and rewrites none
    assert "li-kept" not in str(caught.value)
    assert "kept-token" not in str(caught.value)
    assert "lost-token" not in str(caught.value)
    assert redis_client.hgetall(keys.registry_destinations()) == before


def test_an_entry_no_key_decrypts_is_reported_and_can_be_mended_or_removed(
    keyed: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.check import offline

    # Given two registered destinations whose key was lost, one with a backlog
    monkeypatch.setenv("CONVDISP_SECRET_KEYS", Fernet.generate_key().decode())
    with Dispatcher(keyed.model_copy()) as admin:
        admin.registry.add("li-lost", {"platform": "linkedin", "token": "lost-token"})
        admin.registry.add("li-busy", {"platform": "linkedin", "token": "busy-token"})
        admin.enqueue_many([linkedin(i, "busy") for i in range(3)], "li-busy")
    monkeypatch.setenv("CONVDISP_SECRET_KEYS", KEY)
    with Dispatcher(keyed.model_copy()) as admin:
        registry = admin.registry
        registry.sync(force=True)
        # Then check names them as errors
        errors = {f.subject: f.message for f in offline(admin.settings, redis_client)
                  if f.level == "error"}  # fmt: skip
        assert set(errors) == {"li-lost", "li-busy"}
        assert "no key in CONVDISP_SECRET_KEYS decrypts" in errors["li-lost"]
        # An update needs a new token, and with one the destination is readable again
        with pytest.raises(ConfigurationError, match="give it a new token"):
            registry.update("li-lost", enabled=False)
        registry.update("li-lost", token="new-token")
        assert admin.settings.destination("li-lost").secret() == "new-token"
        assert "li-lost" not in registry.skipped
        # Its backlog cannot be drained, but it can be dead-lettered with the entry removed
        with pytest.raises(ConfigurationError, match="cannot be delivered"):
            registry.remove("li-busy", "drain")
        assert Control(admin).remove_destination("li-busy", "dead-letter") == 3
        assert DeadLetters(admin).count("linkedin") == 3
        assert redis_client.hexists(keys.registry_destinations(), "li-busy") == 0


def test_an_inline_token_without_a_key_is_refused(
    keyed: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVDISP_SECRET_KEYS")
    with Dispatcher(keyed) as admin:
        with pytest.raises(ConfigurationError, match="CONVDISP_SECRET_KEYS"):
            admin.registry.add("li-x", {"platform": "linkedin", "token": "t"})
        admin.registry.add("li-env", {"platform": "linkedin", "token_env": "LI_TOKEN"})
        assert admin.settings.destination("li-env").token_env == "LI_TOKEN"


def test_bad_input_names_the_field(keyed: Settings) -> None:
    with Dispatcher(keyed) as admin:
        with pytest.raises(ConfigurationError, match="ad_account_id"):
            admin.registry.add("pin-x", {"platform": "pinterest", "token_env": "P"})
        with pytest.raises(ConfigurationError, match="must match"):
            admin.registry.add("Bad Name", {"platform": "linkedin", "token_env": "P"})
        assert redis_keys(admin) == []


def redis_keys(d: Dispatcher) -> list[bytes]:
    return list(d.redis.hkeys(keys.registry_destinations()))


def test_a_disabled_destination_refuses_events_and_pauses_delivery(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-off", {"platform": "linkedin", "token": "t"})
        admin.enqueue(linkedin(1, "off"), "li-off")
        admin.registry.set_enabled("li-off", False)
        with pytest.raises(ConfigurationError, match="disabled"):
            admin.enqueue(linkedin(2, "off"), "li-off")
        seen: list[str] = []
        assert worker(keyed, redis_client, seen).drain("li-off").status is DrainStatus.PAUSED
        assert seen == []
        admin.registry.set_enabled("li-off", True)
        assert worker(keyed, redis_client, seen).drain("li-off").delivered == 1


@pytest.mark.parametrize("policy", ["keep", "dead-letter", "drain"])
def test_removal_with_a_backlog_follows_the_policy(
    keyed: Settings, redis_client: redis.Redis, policy: str
) -> None:
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-gone", {"platform": "linkedin", "token": "t"})
        admin.enqueue_many([linkedin(i, "gone") for i in range(3)], "li-gone")
        assert Control(admin).remove_destination("li-gone", policy) == 3
        if policy == "keep":
            assert redis_client.xlen(keys.stream("li-gone")) == 3
            assert "li-gone" not in admin.settings.destinations
        elif policy == "dead-letter":
            assert redis_client.xlen(keys.stream("li-gone")) == 0
            assert DeadLetters(admin).count("linkedin") == 3
        else:
            with pytest.raises(ConfigurationError, match="draining"):
                admin.enqueue(linkedin(9, "gone"), "li-gone")
            seen: list[str] = []
            engine = worker(keyed, redis_client, seen)
            assert engine.drain("li-gone").delivered == 3
            engine.drain("li-gone")  # finds it empty: removes it
            admin.registry.sync(force=True)
            assert "li-gone" not in admin.settings.destinations
            assert len(seen) == 1


def test_the_registry_alone_does_not_dead_letter(keyed: Settings) -> None:
    # Given a registered destination, when the registry alone is asked to dead-letter it
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-dl", {"platform": "linkedin", "token": "t"})
        with pytest.raises(ConfigurationError, match="remove_destination"):
            admin.registry.remove("li-dl", "dead-letter")
        # Then it refuses, and the destination stays
        assert "li-dl" in admin.settings.destinations


def test_routes_registered_at_runtime_fan_out(keyed: Settings, redis_client: redis.Redis) -> None:
    with Dispatcher(keyed) as admin:
        admin.registry.add("vn-rt", {"platform": "vnative", "token": "k"})
        admin.registry.add_route({"event": "purchase", "destination": "vn-rt", "sub1": "rt"})
        receipt = admin.enqueue_conversion(full_conversion())
        assert [r.destination for r in receipt.receipts] == ["vn-rt"]
        assert admin.registry.remove_route("purchase", "vn-rt")
        assert admin.enqueue_conversion(full_conversion(event_id="x")).receipts == []


def test_a_registered_route_is_checked_as_a_configured_one_is(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    with Dispatcher(keyed) as admin:
        admin.registry.add("ym-rt", {"platform": "yandex", "token": "y", "counter_id": "1"})
        with pytest.raises(ConfigurationError, match="needs target"):
            admin.registry.add_route({"event": "purchase", "destination": "ym-rt"})
        with pytest.raises(ConfigurationError, match="route: bogus: Extra inputs"):
            admin.registry.add_route({"event": "x", "destination": "ym-rt", "bogus": 1})
        # Then nothing of either was registered
        assert redis_client.hlen(keys.registry_routes()) == 0


def test_a_replay_with_a_letter_of_an_unknown_destination_refuses_before_writing(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    # Given two dead letters, one of a destination known, one of a destination gone
    for name in ("li-known", "li-gone"):
        body = linkedin(1, name)
        redis_client.xadd(keys.deadletters("linkedin"), {
            "d": name, "e": body["eventId"], "p": json.dumps(body),
            "t": body["conversionHappenedAt"], "reason": "400: x", "status": 400,
            "excerpt": "", "attempts": 1, "at": 0,
        })  # fmt: skip
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-known", {"platform": "linkedin", "token": "k"})
        letters = DeadLetters(admin)
        # When it is replayed, dry or for real, Then both refuse and nothing moved
        for dry_run in (True, False):
            with pytest.raises(UnknownDestinationError, match="li-gone"):
                letters.replay("linkedin", dry_run=dry_run)
    assert redis_client.xlen(keys.deadletters("linkedin")) == 2
    assert redis_client.exists(keys.stream("li-known")) == 0


def test_a_worker_that_has_not_looked_yet_finds_a_just_registered_destination(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    # Given a worker that looked at the registry a moment ago and would not look for an hour
    slow = keyed.model_copy(update={"registry_refresh_s": 3600.0})
    seen: list[str] = []
    engine = worker(slow, redis_client, seen)
    engine.registry.sync(force=True)
    # When a destination is registered elsewhere and its first drain reaches that worker
    with Dispatcher(keyed.model_copy()) as admin:
        admin.registry.add("li-late", {"platform": "linkedin", "token": "late"})
        admin.enqueue(linkedin(1, "late"), "li-late")
    # Then the worker looks it up at once instead of taking it for a removed destination
    assert engine.drain("li-late").delivered == 1
    assert seen == ["Bearer late"]


def dead_letter(client: redis.Redis, destination: str, i: int) -> None:
    body = linkedin(i, destination)
    client.xadd(keys.deadletters("linkedin"), {
        "d": destination, "e": body["eventId"], "p": json.dumps(body),
        "t": body["conversionHappenedAt"], "reason": "400: x", "status": 400,
        "excerpt": "", "attempts": 1, "at": 0,
    })  # fmt: skip


def test_a_replay_refused_for_one_full_destination_replays_the_others_once(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    # Given two dead letters each of li-full (at its cap of 2) and li-free
    capped = keyed.linkedin.model_copy(update={"max_backlog": 2})
    small = keyed.model_copy(update={"linkedin": capped})
    with Dispatcher(small) as admin:
        for name in ("li-full", "li-free"):
            admin.registry.add(name, {"platform": "linkedin", "token": "k"})
        admin.enqueue_many([linkedin(i, "waiting") for i in range(2)], "li-full")
        for i in range(2):
            dead_letter(redis_client, "li-full", i)
            dead_letter(redis_client, "li-free", i)
        letters = DeadLetters(admin)
        # When they are replayed, twice (the caller retries after the refusal)
        for _ in range(2):
            with pytest.raises(BackpressureError, match="li-full"):
                letters.replay("linkedin")
        # Then li-free's events are back once, and only li-full's letters are left
        assert redis_client.xlen(keys.stream("li-free")) == 2
        assert {letter.destination for letter in letters.iter("linkedin")} == {"li-full"}
        assert letters.count("linkedin") == 2


def test_a_replay_sees_destinations_registered_by_another_process(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    unseen = keyed.model_copy(update={"destinations": dict(keyed.destinations)})
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-rt", {"platform": "linkedin", "token": "k"})
    dead_letter(redis_client, "li-rt", 1)
    # A process that has not looked at the registry yet replays it
    with Dispatcher(unseen) as fresh:
        assert DeadLetters(fresh).replay("linkedin") == 1
    assert redis_client.xlen(keys.stream("li-rt")) == 1


def test_dead_lettering_a_configured_name_is_refused_before_its_entry_goes(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    # Given "li-cfg" registered by one process and in the configuration of another
    with Dispatcher(keyed) as other:
        other.registry.add("li-cfg", {"platform": "linkedin", "token": "k", "tenant": "t1"})
    both = dict(keyed.destinations) | {"li-cfg": keyed.destinations["li-main"]}
    with Dispatcher(keyed.model_copy(update={"destinations": both})) as admin:
        # When it is removed with dead-letter, Then it is refused and the entry is still there
        with pytest.raises(ConfigurationError, match="in the configuration"):
            Control(admin).remove_destination("li-cfg", "dead-letter")
        assert redis_client.hexists(keys.registry_destinations(), "li-cfg")


def test_registry_calls_with_redis_down_raise_storage_error(keyed: Settings) -> None:
    down = keyed.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with Dispatcher(down) as admin:
        calls: list[Callable[[], object]] = [
            lambda: admin.registry.add("li-x", {"platform": "linkedin", "token": "k"}),
            lambda: admin.registry.entries(),
            lambda: admin.registry.update("li-x", enabled=False),
            lambda: admin.registry.remove("li-x", "keep"),
            lambda: admin.registry.remove_route("purchase", "li-x"),
            lambda: Control(admin).remove_destination("li-x", "keep"),
        ]
        for call in calls:
            with pytest.raises(StorageError):
                call()


def test_entries_written_by_hand_skip_only_themselves(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    # Given a destination entry that is not JSON and a route that is not a route
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-ok", {"platform": "linkedin", "token": "k"})
    redis_client.hset(keys.registry_destinations(), "li-bad", "{not json")
    redis_client.hset(keys.registry_routes(), "purchase\x1fli-ok", "[1]")
    redis_client.incr(keys.registry_version())
    # When a producer enqueues, Then the good destination takes events, the bad is skipped
    with Dispatcher(keyed) as producer:
        producer.enqueue(linkedin(1), "li-ok")
        assert "li-bad" in producer.registry.skipped
    assert redis_client.xlen(keys.stream("li-ok")) == 1


def test_personal_data_in_a_destination_name_is_masked_in_registry_errors(
    keyed: Settings, redis_client: redis.Redis
) -> None:
    with Dispatcher(keyed) as admin:
        refusals: list[Callable[[], object]] = [
            lambda: admin.registry.add("jane@example.com", {"platform": "linkedin", "token": "k"}),
            lambda: admin.registry.add("jane@example.com", {"platform": "linkedin"}),
            lambda: Control(admin).dead_letter_orphan("jane@example.com", "linkedin"),
            lambda: DeadLetters(admin).count("jane@example.com"),
        ]
        for call in refusals:
            with pytest.raises(ConfigurationError) as caught:
                call()
            assert "jane" not in str(caught.value)
            assert "<email address>" in str(caught.value)


def test_wrong_types_are_configuration_errors(keyed: Settings, redis_client: redis.Redis) -> None:
    with Dispatcher(keyed) as admin:
        admin.registry.add("li-t", {"platform": "linkedin", "token": "k"})
        version = redis_client.get(keys.registry_version())
        bad = cast(Any, None)
        calls: list[Callable[[], object]] = [
            lambda: admin.registry.add(bad, {"platform": "linkedin", "token": "k"}),
            lambda: admin.registry.add(cast(Any, 5), {"platform": "linkedin", "token": "k"}),
            lambda: admin.registry.update(bad, enabled=False),
            lambda: admin.registry.remove(bad, "keep"),
            lambda: admin.registry.set_enabled("li-t", bad),  # used to write and bump
            lambda: Dispatcher(cast(Any, "redis://localhost/0")),
            lambda: Dispatcher(cast(Any, {})),
        ]
        for call in calls:
            with pytest.raises(ConfigurationError):
                call()
        assert redis_client.get(keys.registry_version()) == version


@pytest.mark.parametrize("blob", [b"[]", b"null", b"42", b'"text"', b"{not json"])
def test_an_entry_that_is_not_a_json_object_is_skipped_and_can_be_replaced_or_removed(
    keyed: Settings, redis_client: redis.Redis, blob: bytes
) -> None:
    # Given a hand-written entry that is not an object, and one whose name is not UTF-8
    redis_client.hset(keys.registry_destinations(), "li-bad", blob)
    redis_client.hset(keys.registry_destinations(), b"\xff\xfe", b"{}")
    redis_client.incr(keys.registry_version())
    with Dispatcher(keyed) as admin:
        # When the registry is read, rotated, mended and removed, Then each works
        admin.registry.sync(force=True)
        assert {"li-bad", "\ufffd\ufffd"} <= set(admin.registry.skipped)
        assert admin.registry.rotate() == 0
        admin.registry.update("li-bad", platform="linkedin", token="new")
        assert "li-bad" in admin.settings.destinations
        redis_client.hset(keys.registry_destinations(), "li-bad", blob)
        redis_client.incr(keys.registry_version())
        assert Control(admin).remove_destination("li-bad", "keep") == 0
        assert not redis_client.hexists(keys.registry_destinations(), "li-bad")


def test_remove_destination_with_a_name_that_is_not_text_is_refused(keyed: Settings) -> None:
    with Dispatcher(keyed) as admin, pytest.raises(ConfigurationError, match="destination id"):
        Control(admin).remove_destination(cast(Any, ["li-x"]), "dead-letter")
