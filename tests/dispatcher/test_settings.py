"""Settings never show a secret: not in repr, not in a validation error, not in a header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher import ConfigurationError, Destination, Settings
from dispatcher.destination import redacted_url
from dispatcher.settings import redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
     ("redis://user:hunter2@h/0", "redis://user:***@h/0"),
     ("redis://:hun@ter2@h:6379/0", "redis://:***@h:6379/0"),
     ("redis://h:6379/0?password=hunter2", "redis://h:6379/0?password=***"),
     ("rediss://h/0?ssl_cert_reqs=none&Password=hunter2&db=1",
      "rediss://h/0?ssl_cert_reqs=none&Password=***&db=1"),
     ("error at redis://:hunter2@a/0 and redis://:hunter2@b/0",
      "error at redis://:***@a/0 and redis://:***@b/0")],
)  # fmt: skip
def test_redacted_hides_a_password_wherever_redis_py_would_read_one(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_repr_hides_the_passwords_of_redis_urls() -> None:
    settings = Settings(
        redis_url="redis://:hunter2@127.0.0.1:6379/0",
        broker_url="rediss://user:s3cret@broker:6380/1",
        destinations={},
    )
    shown = repr(settings) + str(settings)
    assert "hunter2" not in shown
    assert "s3cret" not in shown
    assert "redis://:***@127.0.0.1:6379/0" in shown


def test_a_validation_error_never_repeats_the_value_it_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Destination.model_validate(
            {"platform": "linkedin", "token": "tok-abc", "ad_account_id": "tok-xyz"}
        )
    assert "tok-xyz" not in str(caught.value)
    assert "tok-abc" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="lease_s") as refused:
        Settings(redis_url="redis://:pw@h/0", lease_s="pw-not-a-number", destinations={})
    assert "pw-not-a-number" not in str(refused.value)
    assert "pw-not-a-number" not in str(refused.value.__cause__)


@pytest.mark.parametrize("url", ["notaurl", "http://h:6379/0", "localhost:6379", ""])
def test_a_redis_url_of_another_scheme_is_a_configuration_error(url: str) -> None:
    # redis-py's own ValueError would come only at the first call, outside the contract.
    with pytest.raises(ConfigurationError, match=r"redis_url: .*redis://, rediss:// or unix://"):
        Settings(redis_url=url, destinations={})
    for good in ("redis://h:6379/0", "rediss://:pw@h/1", "unix:///tmp/r.sock"):
        assert Settings(redis_url=good, destinations={}).redis_url == good
    nodes = Settings(redis_url="redis://a:1,b:2/0", redis_cluster=True, broker_url="redis://b/0")
    assert nodes.redis_url == "redis://a:1,b:2/0"  # a cluster's nodes
    # A scheme is case-insensitive (RFC 3986): taken, and written in lower case.
    assert Settings(redis_url="REDIS://h:6379/0", destinations={}).redis_url == "redis://h:6379/0"
    assert Settings(redis_url="Unix:///tmp/r.sock", destinations={}).redis_url.startswith("unix:")


@pytest.mark.parametrize(
    "url",
    ["redis://default:hunter2?x@127.0.0.1:6379/0",  # a password holding ? or /: read as a port
     "redis://default:hun/ter2@127.0.0.1:6379/0",
     "redis://h:notaport/0", "redis://h:99999/0", "redis://h/0?db=x",
     "redis://h/0?socket_timeout=abc", "redis://h/0?bogus=1", "redis://[::1",
     "unix:///tmp/r.sock?bogus=1", "redis://a:1,b:2/0"],
)  # fmt: skip
def test_a_redis_url_redis_py_cannot_read_is_refused_without_its_text(url: str) -> None:
    # redis-py would raise its ValueError (quoting the password) or TypeError at every call.
    with pytest.raises(ConfigurationError, match=r"redis_url: .*redis-py cannot read it") as caught:
        Settings(redis_url=url, destinations={})
    chain = [caught.value, caught.value.__cause__, caught.value.__cause__.__context__]
    assert not any("hunter2" in str(e) or "hun" in repr(e) for e in chain)


def test_repr_hides_a_password_holding_a_space() -> None:
    shown = repr(Settings(redis_url="redis://u:hunter 2@h/0", destinations={}))
    assert "hunter" not in shown
    assert "redis://u:***@h/0" in shown


@pytest.mark.parametrize(
    ("values", "field"),
    [({"idempotency_window_s": float("inf")}, "idempotency_window_s"),
     ({"idempotency_window_s": 1e14}, "idempotency_window_s"),  # PEXPIRE would refuse it
     ({"lease_s": float("-inf")}, "lease_s"),
     ({"vnative": {"max_wait_s": float("inf")}}, "max_wait_s"),
     ({"linkedin": {"rate_per_min": float("inf")}}, "rate_per_min"),
     ({"yandex": {"acceptance_window_s": 1e300}}, "acceptance_window_s"),
     ({"pinterest": {"max_backlog": 10**30}}, "max_backlog")],
)  # fmt: skip
def test_infinite_and_out_of_range_numbers_are_refused(values: dict[str, Any], field: str) -> None:
    # Taken, they made every enqueue fail later (OverflowError; a script's error after XADD).
    with pytest.raises(ConfigurationError, match=field):
        Settings(**values, destinations={})
    assert Settings(idempotency_window_s=3650 * 86_400, destinations={}).idempotency_window_s


@pytest.mark.parametrize("named", ["/tmp", "/dev/zero"])
def test_a_config_path_that_is_not_a_file_is_refused(
    named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pydantic-settings reads nothing from it: the defaults (localhost) would be used quietly.
    monkeypatch.setenv("CONVDISP_CONFIG", named)
    with pytest.raises(ConfigurationError, match="is not a file"):
        Settings()


def test_personal_data_in_a_destination_id_is_masked_in_configuration_errors() -> None:
    vn = {"platform": "vnative", "token": "x"}
    with pytest.raises(ConfigurationError, match="<email address>") as caught:
        Settings(destinations={"jane@example.com": vn})
    assert "jane" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="<email address>") as caught:
        Settings(destinations={"jane@example.com": {"platform": "vnative"}})  # no token
    assert "jane" not in str(caught.value)
    route = {"event": "purchase", "destination": "+14155550123"}
    with pytest.raises(ConfigurationError, match="unknown destination '<phone number>'") as caught:
        Settings(destinations={"vn": vn}, routes=[route])
    assert "4155550123" not in str(caught.value)


def test_a_token_loses_a_secret_files_newline_and_a_control_character_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LI_TOKEN", "  tok-123\n")
    assert Destination(platform="linkedin", token_env="LI_TOKEN").secret() == "tok-123"
    for bad in ("tok\r\nX-Injected: 1", "tok\x85x", "tok\u2028x", "tokén"):
        monkeypatch.setenv("LI_TOKEN", bad)
        with pytest.raises(ConfigurationError, match="LI_TOKEN holds a control") as caught:
            Destination(platform="linkedin", token_env="LI_TOKEN").secret()
        assert "tok" not in str(caught.value).replace("token", "")
    with pytest.raises(ValidationError, match="token is empty"):
        Destination.model_validate({"platform": "linkedin", "token": "  \n"})
    assert Destination.model_validate({"platform": "linkedin", "token": "t1\n"}).secret() == "t1"
    with pytest.raises(ValidationError, match="holds a control") as refused:
        Destination.model_validate({"platform": "linkedin", "token": "t1\nHost: evil"})
    assert "evil" not in str(refused.value)


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process-wide settings and dispatcher read again, from the variables set here."""
    import dispatcher
    from dispatcher.settings import get_settings

    get_settings.cache_clear()
    monkeypatch.setattr(dispatcher, "_default", None)
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
def test_settings_that_cannot_be_read_raise_configuration_error_without_the_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import dispatcher
    from dispatcher.settings import get_settings

    # A variable with a bad value: named, its value not repeated
    monkeypatch.setenv("CONVDISP_LEASE_S", "hunter2")
    with pytest.raises(ConfigurationError, match="lease_s") as caught:
        dispatcher.enqueue({"click_id": "c1"}, "vn")
    assert "hunter2" not in str(caught.value)
    monkeypatch.delenv("CONVDISP_LEASE_S")
    # A file that is not TOML
    bad = tmp_path / "bad.toml"
    bad.write_text('redis_url = "redis://x\n[[[')
    monkeypatch.setenv("CONVDISP_CONFIG", str(bad))
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        get_settings()


def test_a_variable_that_is_not_json_keeps_its_value_out_of_the_error_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a destinations variable that is not JSON, holding a token
    monkeypatch.setenv(
        "CONVDISP_DESTINATIONS", '{"li": {"platform": "linkedin", "token": "hunter2"'
    )
    # When the settings are read
    with pytest.raises(ConfigurationError, match="destinations") as caught:
        Settings()
    # Then no exception of the chain holds the token, in its text or its attributes
    # (a JSONDecodeError keeps the whole document in `doc`; error trackers record it)
    seen: BaseException | None = caught.value
    while seen is not None:
        assert "hunter2" not in repr(seen) + repr(vars(seen))
        seen = seen.__cause__ or seen.__context__


def test_a_broker_password_with_a_question_mark_stays_hidden_and_text_is_not_overredacted() -> None:
    shown = repr(Settings(broker_url="redis://:pa?ss@broker:6379/0", destinations={}))
    assert "pa?ss" not in shown
    assert "redis://:***@broker:6379/0" in shown
    text = "Redis at redis://h:6379 is down; mail ops@example.com"
    assert redacted(text) == text


@pytest.mark.parametrize("url", ["redis://h/0?protocol=4", "rediss://h/0?ssl_cert_reqs=CERT_NONE"])
def test_a_url_redis_py_refuses_with_its_own_error_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="redis-py cannot read it"):
        Settings(redis_url=url, destinations={})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:p w@h:1/0", "redis://u:***@h:1/0"),  # a space: only a URL split sees it
        ("redis://:pa@ss@h/0?x=1", "redis://:***@h/0?x=1"),
        ("redis://u:pw@[::1:6379", "redis://u:***@[::1:6379"),  # urllib cannot split it
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redacted_url_hides_the_password_of_any_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
