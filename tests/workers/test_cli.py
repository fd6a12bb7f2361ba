"""The operator CLI, run as a separate process against the test Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from dispatcher import ConfigurationError, Destination, Dispatcher, Settings, keys
from tests.pipeline.events import linkedin, many


def cli(settings: Settings, tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVDISP_")}
    env |= {
        "CONVDISP_CONFIG": str(tmp_path / "none.toml"),
        "CONVDISP_REDIS_URL": settings.redis_url,
        "CONVDISP_DESTINATIONS": json.dumps(
            {"li-main": {"platform": "linkedin", "token": "token-main"}}
        ),
        "COLUMNS": "200",
    }
    (tmp_path / "none.toml").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_pause_and_resume(
    settings: Settings, dispatcher: Dispatcher, redis_client: redis.Redis, tmp_path: Path
) -> None:
    dispatcher.enqueue_many(many(3), "li-main")
    assert "li-main" in cli(settings, tmp_path, "status")
    cli(settings, tmp_path, "pause", "li-main", "--reason", "maintenance")
    assert "paused: maintenance" in cli(settings, tmp_path, "status", "li-main")
    cli(settings, tmp_path, "resume", "li-main")
    assert "paused:" not in cli(settings, tmp_path, "status", "li-main")


def test_text_that_looks_like_markup_or_an_emoji_code_is_printed_as_it_is(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a pause reason and a dead letter's event id with brackets and an emoji code
    reason = "ticket [/x] [red]a :thumbs_up:"
    assert f"li-main paused: {reason}" in cli(
        settings, tmp_path, "pause", "li-main", "--reason", reason
    )
    body = linkedin(1, "dead") | {"eventId": "ord[/x]"}
    redis_client.xadd(keys.deadletters("linkedin"), {
        "d": "li-main", "e": "ord[/x]", "p": json.dumps(body), "t": body["conversionHappenedAt"],
        "reason": "400: [bold]refused", "status": 400, "excerpt": "", "attempts": 1, "at": 0,
    })  # fmt: skip
    # When an operator reads them, then each shows as it is (Rich markup would have raised
    # on `[/x]`, swallowed `[red]` and made a picture of `:thumbs_up:`)
    assert f"paused: {reason}" in cli(settings, tmp_path, "status", "li-main")
    listed = cli(settings, tmp_path, "dead", "list", "linkedin")
    assert "ord[/x]" in listed
    assert "400: [bold]refused" in listed


def test_dead_letters_list_replay_and_purge(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given two dead letters
    for i in (1, 2):
        body = linkedin(i, "dead")
        redis_client.xadd(keys.deadletters("linkedin"), {
            "d": "li-main", "e": body["eventId"], "p": json.dumps(body),
            "t": body["conversionHappenedAt"], "reason": f"400: refused {i}", "status": 400,
            "excerpt": "", "attempts": 1, "at": 0,
        })  # fmt: skip
    # When an operator lists them, replays one and purges the rest
    listing = cli(settings, tmp_path, "dead", "list", "linkedin")
    assert "refused 1" in listing
    assert "dead-2" in listing
    first = redis_client.xrange(keys.deadletters("linkedin"))[0][0].decode()
    assert "replayed 1" in cli(settings, tmp_path, "dead", "replay", "linkedin", "--ids", first)
    assert "purged 1" in cli(settings, tmp_path, "dead", "purge", "linkedin")
    # Then the replayed event waits on its stream again and no dead letter is left
    (entry,) = list(redis_client.xrange(keys.stream("li-main")))
    assert entry[1][b"e"] == b"dead-1"
    assert redis_client.xlen(keys.deadletters("linkedin")) == 0


def test_linkedin_ensure_rules_and_a_refusal(settings: Settings, tmp_path: Path) -> None:
    from sandboxes import linkedin as linkedin_sandbox
    from sandboxes.base import serve

    server = serve(linkedin_sandbox.make_app)
    rule = {"name": "Leads", "type": "LEAD", "campaigns": ["1", "2", "3"]}
    dests = {
        "li-main": {"platform": "linkedin", "token": "t", "ad_account_id": "77", "rules": [rule]}
    }
    env = {"CONVDISP_LINKEDIN__BASE_URL": server.url, "CONVDISP_DESTINATIONS": json.dumps(dests)}
    try:
        # Given a destination declaring one rule, ensure creates it, then leaves it alone
        first = run_cli(settings, tmp_path, env, "linkedin", "ensure", "li-main")
        again = run_cli(settings, tmp_path, env, "linkedin", "ensure", "li-main")
        assert first.returncode == 0, first.stderr
        assert "Leads: created urn:lla:llaPartnerConversion:" in first.stdout
        assert "3 campaign(s) associated" in first.stdout
        assert "Leads: unchanged" in again.stdout
        # And `rules` lists it with its full URN
        listed = run_cli(settings, tmp_path, env, "linkedin", "rules", "li-main")
        assert "urn:lla:llaPartnerConversion:100001" in listed.stdout
        # And LinkedIn's refusal is one line on stderr with exit 1
        bad = run_cli(settings, tmp_path, env, "linkedin", "disable", "li-main", "999")
        assert bad.returncode == 1
        assert bad.stderr.strip().count("\n") == 0
        assert "LinkedIn 404" in bad.stderr
    finally:
        server.stop()


def run_cli(
    settings: Settings, tmp_path: Path, extra: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVDISP_")}
    env |= {"CONVDISP_CONFIG": str(tmp_path / "none.toml"), "COLUMNS": "200"}
    env |= {"CONVDISP_REDIS_URL": settings.redis_url, **extra}
    (tmp_path / "none.toml").write_text("")
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ")
    assert done.stderr.strip().count("\n") == 0, done.stderr
    return done.stderr


def test_every_user_error_is_one_line_and_exit_1(settings: Settings, tmp_path: Path) -> None:
    dests = json.dumps({"li-main": {"platform": "linkedin", "token": "t"}})
    ok = {"CONVDISP_DESTINATIONS": dests}
    # An unknown destination, an unknown platform
    err = one_line_error(run_cli(settings, tmp_path, ok, "status", "nope"))
    assert "unknown destination 'nope' (configured: li-main)" in err
    err = one_line_error(run_cli(settings, tmp_path, ok, "dead", "list", "linkdin"))
    assert "unknown platform 'linkdin'" in err
    err = one_line_error(run_cli(settings, tmp_path, ok, "jobs", "yandx"))
    assert "unknown platform 'yandx'" in err
    # Redis unreachable (its password is never shown)
    down = ok | {"CONVDISP_REDIS_URL": "redis://:hunter2@127.0.0.1:9/0"}
    err = one_line_error(run_cli(settings, tmp_path, down, "status"))
    assert "Redis at redis://:***@127.0.0.1:9/0 is unreachable" in err
    assert "hunter2" not in err
    # A missing config file, a TOML syntax error and an invalid value, each naming the file
    missing = tmp_path / "missing.toml"
    err = one_line_error(run_cli(settings, tmp_path, {}, "--config", str(missing), "status"))
    assert str(missing) in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[destinations.a]\nplatform = \n")
    err = one_line_error(run_cli(settings, tmp_path, {}, "--config", str(bad), "status"))
    assert f"{bad}: not valid TOML" in err
    assert "line 2" in err
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[destinations.a]\nplatform = "linkdin"\ntoken = "t"\n')
    err = one_line_error(run_cli(settings, tmp_path, {}, "--config", str(wrong), "status"))
    assert f"{wrong}: destinations.a.platform" in err
    # Nothing configured: a message, not an empty table
    err = one_line_error(run_cli(settings, tmp_path, {}, "status"))
    assert "no destinations configured" in err
    # And --verbose shows the traceback instead
    verbose = run_cli(settings, tmp_path, ok, "--verbose", "status", "nope")
    assert "Traceback" in verbose.stderr


def test_pause_and_resume_confirm(settings: Settings, tmp_path: Path) -> None:
    assert "li-main paused: deploy" in cli(
        settings, tmp_path, "pause", "li-main", "--reason", "deploy"
    )
    assert "li-main resumed" in cli(settings, tmp_path, "resume", "li-main")


def test_dead_show_and_replay_by_reason_and_time(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given three dead letters: two refused for one reason, one for another
    for i, reason in enumerate(["422: bad hash", "422: bad hash", "expired: too old"]):
        body = json.dumps(linkedin(i, "dl")).encode()
        redis_client.xadd(
            keys.deadletters("linkedin"),
            {"d": "li-main", "e": f"dl-{i}", "reason": reason, "p": body, "t": 0, "at": 0},
        )
    (first, *_) = [e[0].decode() for e in redis_client.xrange(keys.deadletters("linkedin"))]
    # When one is shown, its reason and event are there in full
    shown = cli(settings, tmp_path, "dead", "show", "linkedin", first)
    assert "422: bad hash" in shown
    assert '"eventId": "dl-0"' in shown
    # And a dry run counts by reason and by time without touching anything
    dry = cli(settings, tmp_path, "dead", "replay", "linkedin", "--reason", "BAD HASH", "--dry-run")
    assert "would replay 2" in dry
    assert "would purge 0" in cli(
        settings,
        tmp_path,
        "dead",
        "purge",
        "linkedin",
        "--until",
        "2000-01-01T00:00:00",
        "--dry-run",
    )
    assert redis_client.xlen(keys.deadletters("linkedin")) == 3
    # And a replay by reason takes exactly those
    assert "replayed 2" in cli(
        settings, tmp_path, "dead", "replay", "linkedin", "--reason", "bad hash"
    )
    assert redis_client.xlen(keys.deadletters("linkedin")) == 1
    assert redis_client.xlen(keys.stream("li-main")) == 2
    # And an unknown id is one line
    missing = run_cli(settings, tmp_path, {}, "dead", "show", "linkedin", "1-1")
    assert "no dead letter 1-1" in one_line_error(missing)


def test_check_catches_an_unset_token_and_a_redis_without_aof(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    dests = {
        "li-main": {"platform": "linkedin", "token": "t"},
        "pin-a": {"platform": "pinterest", "token_env": "PIN_TOKEN_UNSET", "ad_account_id": "1"},
    }
    env = {"CONVDISP_DESTINATIONS": json.dumps(dests)}
    redis_client.config_set("appendonly", "no")
    try:
        done = run_cli(settings, tmp_path, env, "check")
    finally:
        redis_client.config_set("appendonly", "yes")
    assert done.returncode == 1
    assert "destination pin-a: configuration: environment variable PIN_TOKEN_UNSET" in done.stdout
    assert "appendonly is off" in done.stdout
    assert "destination li-main: linkedin: credentials set" in done.stdout
    # And with AOF back and the variable set, everything passes
    fixed = run_cli(settings, tmp_path, env | {"PIN_TOKEN_UNSET": "x"}, "check")
    assert fixed.returncode == 0, fixed.stdout


def test_trace_says_where_an_event_is(
    settings: Settings, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    dispatcher.enqueue(linkedin(7, "cli"), "li-main")
    out = cli(settings, tmp_path, "trace", "cli-7")
    assert "li-main waiting: waiting since" in out
    missing = run_cli(settings, tmp_path, {}, "trace", "nope")
    assert missing.returncode == 1
    assert "unknown" in missing.stdout


def test_status_of_many_destinations_is_a_top_n_with_totals(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given 30 destinations, one of them with a backlog of 5 and one paused
    dests = {f"li-{i:02}": {"platform": "linkedin", "token": f"t{i}"} for i in range(30)}
    env = {"CONVDISP_DESTINATIONS": json.dumps(dests)}
    wide = settings.model_copy(
        update={"destinations": {n: Destination.model_validate(d) for n, d in dests.items()}}
    )
    with Dispatcher(wide) as producer:
        producer.enqueue_many(many(5), "li-17")
    redis_client.hset(
        keys.state("li-03"), mapping={"paused": 1, "pause_reason": "401", "failures": 2}
    )
    # When the top 3 by backlog, then by errors, are asked for
    by_backlog = run_cli(settings, tmp_path, env, "status", "--top", "3")
    by_errors = run_cli(settings, tmp_path, env, "status", "--top", "1", "--sort", "errors")
    # Then the biggest backlog leads, the paused one leads by errors, and totals cover all 30
    rows = [line for line in by_backlog.stdout.splitlines() if "li-" in line]
    assert len(rows) == 3
    assert "li-17" in rows[0]
    assert "30 destination(s): backlog 5, 1 paused" in by_backlog.stdout
    assert "showing 3 by backlog" in by_backlog.stdout
    assert "li-03" in next(line for line in by_errors.stdout.splitlines() if "li-" in line)


def test_check_online_makes_one_authenticated_call_per_destination(
    settings: Settings, tmp_path: Path
) -> None:
    from sandboxes import linkedin as linkedin_sandbox
    from sandboxes.base import serve

    server = serve(linkedin_sandbox.make_app)
    server.sandbox.configure({"revoked_tokens": ["revoked"]})
    dests = {
        "li-good": {"platform": "linkedin", "token": "good", "ad_account_id": "5"},
        "li-revoked": {"platform": "linkedin", "token": "revoked", "ad_account_id": "5"},
        "li-no-account": {"platform": "linkedin", "token": "good"},
    }
    env = {"CONVDISP_LINKEDIN__BASE_URL": server.url, "CONVDISP_DESTINATIONS": json.dumps(dests)}
    try:
        done = run_cli(settings, tmp_path, env, "check", "--online")
    finally:
        server.stop()
    assert done.returncode == 1
    assert "destination li-good (online): authenticated call answered 200" in done.stdout
    assert "destination li-revoked (online): answered 401" in done.stdout
    assert "li-no-account (online): no harmless call: set ad_account_id" in done.stdout
    calls = [c for c in server.sandbox.calls() if c.path == "/rest/conversions"]
    assert len(calls) == 2


def test_the_readme_runtime_example_works_and_registered_destinations_are_operable(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    key = run_cli(settings, tmp_path, {}, "destinations", "new-key").stdout.strip()
    env = {"CONVDISP_SECRET_KEYS": key}
    # Given the README's example: a numeric ad account id and a positional route setting
    done = run_cli(settings, tmp_path, env, "destinations", "add", "pin-client-42",
                   "platform=pinterest", "token=pina_x", "ad_account_id=549755885175",
                   "tenant=client-42")  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run_cli(settings, tmp_path, env, "destinations", "route", "purchase",
                   "pin-client-42", "event_name=checkout")  # fmt: skip
    assert done.returncode == 0, done.stderr
    stored = json.loads(redis_client.hget(keys.registry_destinations(), "pin-client-42") or b"")
    assert stored["ad_account_id"] == "549755885175"
    # Then every operator command knows the registered destination
    for args in (("pause", "pin-client-42"), ("resume", "pin-client-42"),
                 ("status", "--tenant", "client-42")):  # fmt: skip
        done = run_cli(settings, tmp_path, env, *args)
        assert done.returncode == 0, done.stderr
    done = run_cli(settings, tmp_path, env, "trace", "e1", "--destination", "pin-client-42")
    assert "unknown destination" not in done.stderr
    assert "pin-client-42" in done.stdout, done
    # And a registered route is checked like a declared one
    done = run_cli(settings, tmp_path, env, "destinations", "add", "ym", "platform=yandex",
                   "token=y0_x", "counter_id=1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    err = one_line_error(run_cli(settings, tmp_path, env, "destinations", "route", "buy", "ym"))
    assert "needs target" in err
    err = one_line_error(run_cli(settings, tmp_path, env, "destinations", "unroute", "x", "ym"))
    assert "no registered route x -> ym" in err


def test_configuration_and_environment_mistakes_are_one_line_and_blame_their_source(
    settings: Settings, tmp_path: Path
) -> None:
    # A variable that is not JSON, and a wrong field set by a variable, name the variable
    err = one_line_error(run_cli(settings, tmp_path, {"CONVDISP_DESTINATIONS": "{no"}, "status"))
    assert "CONVDISP_DESTINATIONS: not valid JSON" in err
    wrong = {"CONVDISP_DESTINATIONS": json.dumps({"a": {"platform": "linkdin", "token": "t"}})}
    err = one_line_error(run_cli(settings, tmp_path, wrong, "status"))
    assert "CONVDISP_DESTINATIONS: destinations.a.platform" in err
    # --config naming a directory, a file that is not UTF-8
    err = one_line_error(run_cli(settings, tmp_path, {}, "--config", str(tmp_path), "status"))
    assert "a directory" in err
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'# caf\xe9\n[destinations.a]\nplatform = "linkedin"\n')
    err = one_line_error(run_cli(settings, tmp_path, {}, "--config", str(latin), "status"))
    assert f"{latin}: not UTF-8" in err
    # A Redis URL redis-py cannot read, a database the server does not have
    ok = {"CONVDISP_DESTINATIONS": json.dumps({"li": {"platform": "linkedin", "token": "t"}})}
    bad_url = ok | {"CONVDISP_REDIS_URL": "redis://:pw@127.0.0.1:notaport/0"}
    err = one_line_error(run_cli(settings, tmp_path, bad_url, "status"))
    assert "pw@" not in err
    typo = ok | {"CONVDISP_REDIS_URL": "redis://h:1/0?password=pw&bogus=1"}
    err = one_line_error(run_cli(settings, tmp_path, typo, "status"))
    assert "CONVDISP_REDIS_URL: redis_url: Value error, redis-py cannot read it" in err
    assert "pw" not in err
    # A whole-settings check blames the variable that set the field it names
    routes = ok | {"CONVDISP_ROUTES": json.dumps([{"event": "x", "destination": "nope"}])}
    err = one_line_error(run_cli(settings, tmp_path, routes, "status"))
    assert err.startswith("error: CONVDISP_ROUTES: ")
    no_db = ok | {"CONVDISP_REDIS_URL": settings.redis_url.rsplit("/", 1)[0] + "/99999"}
    assert "refused" in one_line_error(run_cli(settings, tmp_path, no_db, "status"))
    # A metrics port out of range; an unknown destination in a dead-letter command
    err = one_line_error(run_cli(settings, tmp_path, ok, "metrics", "--port", "70000"))
    assert "cannot serve metrics" in err
    err = one_line_error(run_cli(settings, tmp_path, ok, "dead", "list", "linkedin",
                                 "--destination", "nope"))  # fmt: skip
    assert "unknown destination 'nope'" in err
    err = one_line_error(run_cli(settings, tmp_path, ok, "status", "--tenant", "nobody"))
    assert "no destination has tenant 'nobody'" in err
    # A dead letter id that names no letter, or is not a stream id (also too large for
    # one: named before Redis is asked, and in replay and purge too, not "replayed 0")
    err = one_line_error(run_cli(settings, tmp_path, ok, "dead", "show", "vnative", "1-1"))
    assert "no dead letter 1-1 in vnative" in err
    for bogus in ("bogus-id", "99999999999999999999999-0", ""):
        for command in (("show", "vnative", bogus), ("replay", "vnative", "--ids", bogus),
                        ("purge", "vnative", "--ids", bogus)):  # fmt: skip
            err = one_line_error(run_cli(settings, tmp_path, ok, "dead", *command))
            assert f"{bogus!r} is not a dead letter id" in err
    # An email or phone number typed where a name goes is not repeated in the error
    for typed, shown in (
        ("bob@example.com", "<email address>"),
        ("+14155550123", "<phone number>"),
    ):
        commands: list[tuple[str, ...]] = [
            ("dead", "list", "linkedin", "--destination", typed),
            ("status", "--tenant", typed),
            ("destinations", "add", typed, "platform=linkedin", "token=t"),
        ]
        for words in commands:
            err = one_line_error(run_cli(settings, tmp_path, ok, *words))
            assert typed not in err
            assert f"'{shown}'" in err
    # An age older than the epoch is simply "everything", not a Redis error
    listed = run_cli(settings, tmp_path, ok, "dead", "list", "vnative", "--since", "99999999999d")
    assert listed.returncode == 0, listed.stderr
    # A negative count is a usage error, not a silent "all"
    assert run_cli(settings, tmp_path, ok, "status", "--top", "-1").returncode == 2


def test_a_settings_error_line_masks_personal_data_in_its_location() -> None:
    from workers.errors import user_error

    with pytest.raises(ConfigurationError) as caught:
        Settings(destinations={"jane@example.com": {"platform": "vnative"}})
    line = user_error(caught.value)
    assert line is not None
    assert "destinations.<email address>" in line
    assert "jane" not in line
