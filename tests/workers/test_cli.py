"""The operator CLI, run as a separate process against the test Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from dispatcher import Dispatcher, Settings, keys
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
    assert "paused" not in cli(settings, tmp_path, "status", "li-main")


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
    env |= {"CONVDISP_CONFIG": str(tmp_path / "none.toml"), "COLUMNS": "200", **extra}
    env["CONVDISP_REDIS_URL"] = settings.redis_url
    (tmp_path / "none.toml").write_text("")
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
