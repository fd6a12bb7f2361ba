"""docker-compose.yml, the image's build context and the example configuration.

Docker cannot run here or in CI, so the compose file is validated against the official
Compose Specification schema after YAML anchors are resolved and its promises are checked
one by one (its services run as local processes: tests/test_compose_services.py).
The schemas, vendored unmodified: tests/compose-spec.schema.json is today's official
one, `schema/compose-spec.json` of compose-spec/compose-spec at commit
170098ba07d9f53c383a41bfd4c5166b0a4529a6 (the file last changed in
a08f8d51631b7127ddac3d2c65537db429d0f1d0, 2025-10-21); tests/compose-spec-2.0.schema.json
is the one Docker Compose 2.0.0 embeds (compose-spec/compose-go v1.0.1, commit
aab9d549bf15e71a8db5db012870a8c62c3ef03c), which backs the minimum version we state.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

from dispatcher import Conversion, Dispatcher, Settings, keys
from dispatcher.settings import (
    PLATFORMS,
    LinkedInSettings,
    PinterestSettings,
    PlatformSettings,
    VNativeSettings,
    YandexSettings,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = {  # schema file: its JSON Schema draft
    "compose-spec.schema.json": jsonschema.Draft7Validator,
    "compose-spec-2.0.schema.json": jsonschema.Draft201909Validator,
}
EXAMPLE_CONFIG = ROOT / "config" / "dispatcher.example.toml"
_VARIABLE = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariableError(Exception):
    """Raised when a `${VAR:?message}` is unset or empty: Compose refuses to start."""


def compose() -> dict[str, Any]:
    """docker-compose.yml with its anchors and `<<` merges resolved, as Compose reads it."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services(dotenv: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The services as written, or as Compose sees them with `dotenv` (.env) interpolated."""
    found = compose()["services"]
    return dict(found if dotenv is None else interpolate(found, dotenv))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as Compose's env_file and systemd's EnvironmentFile read them."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines if "=" in line)


def example_dotenv() -> dict[str, str]:
    """The .env an operator starts from (config/env.example)."""
    return read_env_file(ROOT / "config" / "env.example")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation: `$$`, `$V`, `${V}`, `${V-d}`, `${V:-d}`, `${V?e}`, `${V:?e}`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match[1]:
            return "$"
        name, op, arg = match[2] or match[5], match[3], match[4] or ""
        given = env.get(name)
        missing = given is None or (given == "" and op is not None and op.startswith(":"))
        if op in ("?", ":?") and missing:
            raise MissingVariableError(f"{name}: {arg}")
        if op in ("-", ":-") and missing:
            return arg
        return given or ""

    return _VARIABLE.sub(one, value)


def schema_errors(document: dict[str, Any], schema: str = "compose-spec.schema.json") -> list[str]:
    validator = SCHEMAS[schema](json.loads((ROOT / "tests" / schema).read_text()))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """What a container's environment holds: its env_files (the .example an operator
    copies) overridden by `environment`, as Compose does."""
    files = service.get("env_file", [])
    env: dict[str, str] = {}
    for name in [files] if isinstance(files, str) else files:
        env |= read_env_file(ROOT / f"{name}.example")
    return env | {k: str(v) for k, v in service.get("environment", {}).items()}


def secrets_by_platform(settings: Settings) -> dict[str, set[str]]:
    """Each platform's secret variables: the example config's token_env and oauth names,
    and whatever its config/env/<platform>.env.example holds."""
    names: dict[str, set[str]] = {
        p: set(read_env_file(ROOT / f"config/env/{p}.env.example")) for p in PLATFORMS
    }
    for dest in settings.destinations.values():
        names[dest.platform] |= {dest.token_env} if dest.token_env else set()
        if dest.oauth is not None:
            names[dest.platform] |= set(dest.oauth.model_dump().values())
    return names


def leaks(found: dict[str, Any], settings: Settings) -> list[str]:
    """Every way a secret reaches a service that does not need it."""
    problems = []
    owners = {
        **{f"worker-{p}": names for p, names in secrets_by_platform(settings).items()},
        "flower": {"FLOWER_BASIC_AUTH"},
        "redis": {"REDISCLI_AUTH"},
    }
    shared = {"redis": "broker"}  # both Redis servers take the one password
    for name, service in found.items():
        env = set(container_env(service))
        for owner, secret in owners.items():
            if name in (owner, shared.get(owner)):
                continue
            problems += [f"{name} gets {s}" for s in sorted(secret & env)]
        if service.get("env_file") in (".env", [".env"]):
            problems.append(f"{name} gets all of .env")
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.rstrip("/") in (".", "./config", "config", "./config/env") or "env" in source:
                problems.append(f"{name} mounts {source}, where the tokens are")
    return problems


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex): `**` any depth, `*` and `?` within a segment."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated, line = line.startswith("!"), line.lstrip("!").strip("/")
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", line)
        tokens = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        rules.append((negated, re.compile("".join(tokens.get(p, re.escape(p)) for p in parts))))
    return rules


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (a match on any parent counts)."""
    parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 2)]
    result = False
    for negated, pattern in dockerignore_rules():
        if any(pattern.fullmatch(p) for p in parents):
            result = not negated
    return result


KEPT_OUT = [
    ".env", ".env.local", ".venv/bin/python", "var/embedded/appendonly.aof", ".git/HEAD",
    "dump.rdb", "config/env/linkedin.env", "config/dispatcher.toml", "workers/x.pyc",
    "dispatcher/__pycache__/a.pyc", ".pytest_cache/v", ".mypy_cache/3.11/x.json",
    ".hypothesis/examples/x", "tests/test_api.py",
]  # fmt: skip


# -- the file itself ----------------------------------------------------------------------


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_compose_file_is_valid_against_the_official_compose_schema(schema: str) -> None:
    SCHEMAS[schema].check_schema(json.loads((ROOT / "tests" / schema).read_text()))
    # As written (anchors resolved), and as Compose sees it with the example .env
    assert schema_errors(compose(), schema) == []
    assert schema_errors(interpolate(compose(), example_dotenv()), schema) == []


def test_the_schema_check_rejects_what_compose_would_reject() -> None:
    broken = compose()
    broken["services"]["redis"]["healthchek"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["metrics"]["build"] = {"context": ".", "dockerfile_inlin": "FROM x"}
    broken["services"]["flower"]["ports"] = "5555:5555"
    errors = "\n".join(schema_errors(broken))
    assert "services/redis: 'healthchek' does not match any of the regexes" in errors
    assert "services/metrics/build: {'context': '.', 'dockerfile_inlin'" in errors
    assert "services/flower/ports: '5555:5555' is not of type 'array'" in errors
    # An attribute newer than the stated minimum (dockerfile_inline: Compose 2.17) fails
    # the 2.0.0 schema only.
    newer = compose()
    newer["services"]["metrics"]["build"] = {"context": ".", "dockerfile_inline": "FROM x"}
    assert schema_errors(newer) == []
    assert schema_errors(newer, "compose-spec-2.0.schema.json") != []


def test_copying_the_examples_is_all_compose_needs() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = {m[2] or m[5] for m in _VARIABLE.finditer(text) if not m[1]}
    assert used <= set(example_dotenv()), "every ${VAR} is in config/env.example"
    for service in services().values():
        for name in [service["env_file"]] if "env_file" in service else []:
            assert (ROOT / f"{name}.example").exists()
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source = ROOT / volume["source"]
                assert source.exists() or source.with_suffix(".example.toml").exists(), source


def test_there_is_a_worker_per_platform_queue_plus_flower_and_no_beat() -> None:
    found = services()
    for platform in PLATFORMS:
        command = found[f"worker-{platform}"]["command"]
        assert command[command.index("-Q") + 1] == f"convdispatch.{platform}"
        assert command[command.index("-n") + 1] == f"{platform}@%h"
    assert not any("beat" in service.get("command", []) for service in found.values())
    assert "flower" in found["flower"]["command"]


def test_every_service_has_a_healthcheck_that_checks_what_it_serves() -> None:
    found = services(example_dotenv())
    for name, service in found.items():
        check = service.get("healthcheck", {})
        assert check.get("test", ["NONE"])[0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name
    assert found["redis"]["healthcheck"]["test"][1] == "redis-cli ping | grep -q PONG"
    for platform in PLATFORMS:
        ping = found[f"worker-{platform}"]["healthcheck"]["test"][1]
        assert f"celery -A workers.app inspect ping -d {platform}@$HOSTNAME" in ping
    flower = found["flower"]["healthcheck"]["test"][-1]
    for needed in ("FLOWER_BASIC_AUTH", "Authorization", "401"):
        assert needed in flower
    assert "127.0.0.1:9108/metrics" in found["metrics"]["healthcheck"]["test"][-1]


def test_every_app_service_reaches_redis_with_its_password() -> None:
    dotenv = example_dotenv()
    for name, service in services(dotenv).items():
        if name in ("redis", "broker"):
            continue
        url = f"redis://:{dotenv['REDIS_PASSWORD']}@redis:6379/0"
        assert service["environment"]["CONVDISP_REDIS_URL"] == url, name
        broker = f"redis://:{dotenv['REDIS_PASSWORD']}@broker:6379/0"
        assert service["environment"]["CONVDISP_BROKER_URL"] == broker, name
        assert service["environment"]["CONVDISP_CONFIG"] == "/app/config/dispatcher.toml"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["broker"]["condition"] == "service_healthy"
    without = {k: v for k, v in dotenv.items() if k != "REDIS_PASSWORD"}
    with pytest.raises(MissingVariableError, match="REDIS_PASSWORD"):
        interpolate(compose(), without)


def test_platform_tokens_reach_only_their_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVDISP_CONFIG", str(EXAMPLE_CONFIG))
    settings = Settings()
    found = services(example_dotenv())
    # Each worker has what its platform's destinations name...
    for platform, names in secrets_by_platform(settings).items():
        wanted = {d.token_env for d in settings.destinations.values() if d.platform == platform}
        assert wanted
        assert wanted <= set(container_env(found[f"worker-{platform}"]))
        assert names
    # ...and no service has another's secrets.
    assert leaks(found, settings) == []
    # The check sees a leak when there is one.
    broken = copy.deepcopy(found)
    broken["metrics"]["env_file"] = ["config/env/linkedin.env"]
    broken["flower"]["volumes"] = ["./config:/app/config:ro"]
    broken["worker-yandex"]["environment"]["VNATIVE_API_KEY"] = "x"
    assert sorted(leaks(broken, settings)) == [
        "flower mounts ./config, where the tokens are",
        "metrics gets LINKEDIN_ACCESS_TOKEN",
        "worker-yandex gets VNATIVE_API_KEY",
    ]


def test_flower_refuses_to_start_without_basic_auth() -> None:
    flower = services()["flower"]
    assert re.fullmatch(
        r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", flower["environment"]["FLOWER_BASIC_AUTH"]
    )
    dotenv = example_dotenv()
    unset = {k: v for k, v in dotenv.items() if k != "FLOWER_BASIC_AUTH"}
    for without in (unset, {**dotenv, "FLOWER_BASIC_AUTH": ""}):
        with pytest.raises(MissingVariableError, match="FLOWER_BASIC_AUTH"):
            interpolate(compose(), without)
    env = services(dotenv)["flower"]["environment"]
    assert env["FLOWER_BASIC_AUTH"] == dotenv["FLOWER_BASIC_AUTH"]
    assert not any("auth" in arg for arg in flower["command"])  # nothing overrides it
    assert "FLOWER_UNAUTHENTICATED_API" not in env


def test_dockerignore_keeps_secrets_state_and_caches_out_of_the_image() -> None:
    for path in KEPT_OUT:
        assert ignored(path), path
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = [
        w
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for w in line.split()[1:-1]
    ]
    assert {"config", "dispatcher", "workers"} <= set(copied)
    for path in [*copied, "config/redis.conf", "dispatcher/settings.py", "workers/app.py"]:
        assert not ignored(path), path


# -- the example configuration ------------------------------------------------------------


def every_identifier(event: str) -> Conversion:
    """A conversion every platform can take (no plain names: LinkedIn would need opt-in)."""
    return Conversion(
        event=event,
        happened_at=datetime.now(UTC) - timedelta(minutes=1),
        value=Decimal("49.90"),
        currency="EUR",
        event_id=f"example-{event}",
        email="jane@example.com",
        li_fat_id="fat-1",
        epik="epik-1",
        ip="203.0.113.9",
        user_agent="Mozilla/5.0",
        yandex_client_id="157000000.1",
        vnative_click_id="5aae975a9b155cccddccefbe",
    )


def test_the_example_config_loads_and_routes_every_platform(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis
) -> None:
    monkeypatch.setenv("CONVDISP_CONFIG", str(EXAMPLE_CONFIG))
    settings = Settings(redis_url=redis_url)
    assert {d.platform for d in settings.destinations.values()} == set(PLATFORMS)
    assert all(d.token_env for d in settings.destinations.values())
    for event in ("purchase", "lead"):
        routes = [r for r in settings.routes if r.event == event]
        assert {settings.destinations[r.destination].platform for r in routes} == set(PLATFORMS)
    # Given the rule URNs `convdispatch linkedin ensure` stores for the declared rules
    for name, dest in settings.destinations.items():
        urns = {
            rule.name: f"urn:lla:llaPartnerConversion:{100 + i}"
            for i, rule in enumerate(dest.rules)
        }
        if urns:
            redis_client.hset(keys.rule_names(name), mapping=urns)
    producer = Dispatcher(settings)
    try:
        for event in ("purchase", "lead"):
            # When a purchase and a lead with every platform's identifiers are enqueued
            result = producer.enqueue_conversion(every_identifier(event))
            # Then every destination takes it
            assert result.skipped == []
            assert {r.destination for r in result.receipts} == set(settings.destinations)
    finally:
        producer.close()


def test_the_example_config_names_every_setting_and_states_its_defaults_truly() -> None:
    """Every setting appears in the example (set, or commented out), every platform knob
    whose default is the platform's own appears in that platform's section, and every
    value it sets is the default (as its header says)."""
    text = EXAMPLE_CONFIG.read_text()
    loaded = tomllib.loads(text)
    sections: dict[str, type[PlatformSettings]] = {
        "linkedin": LinkedInSettings, "pinterest": PinterestSettings,
        "yandex": YandexSettings, "vnative": VNativeSettings,
    }  # fmt: skip
    nested = {*sections, "destinations", "routes"}
    missing = [f for f in Settings.model_fields
               if f not in nested and not re.search(rf"^#? ?{f} =", text, re.M)]  # fmt: skip
    base = PlatformSettings.model_fields
    for name, cls in sections.items():
        body = text.split(f"[{name}]\n", 1)[1].split("\n[", 1)[0]
        for field, info in cls.model_fields.items():
            own = field not in base or info.default != base[field].default
            if (own or name == "linkedin") and not re.search(rf"^#? ?{field} =", body, re.M):
                missing.append(f"{name}.{field}")
    assert missing == []
    for name, cls in sections.items():
        for field, value in loaded[name].items():
            assert value == cls.model_fields[field].default, f"{name}.{field}"
    for field, value in loaded.items():
        if field not in nested:
            assert value == Settings.model_fields[field].default, field
