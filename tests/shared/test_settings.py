"""Settings: read from RELAY_* variables, and the table of docs/operations.md lists exactly those."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import CONFIG_ERROR_EXIT_CODE, ConfigError, Settings, environment_warnings, load_settings

SETTINGS_DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_the_docs_document_every_setting() -> None:
    documented = set(re.findall(r"^\| `(RELAY_[A-Z_]+)` \|", SETTINGS_DOC.read_text(), flags=re.MULTILINE))
    assert documented == {f"RELAY_{name.upper()}" for name in Settings.model_fields}


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_MAX_QUEUE_DEPTH", "7")
    monkeypatch.setenv("RELAY_API_KEYS", " s3cr3t-one , ,s3cr3t-two ")
    settings = Settings()
    assert settings.max_queue_depth == 7
    assert settings.api_key_list() == ["s3cr3t-one", "s3cr3t-two"]
    assert "s3cr3t" not in repr(settings)  # secrets stay out of logs


def test_bridge_needs_a_way_in_and_an_entity(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not Settings().servicebus_enabled
    monkeypatch.setenv("RELAY_SERVICEBUS_QUEUE", "tasks")
    assert not Settings().servicebus_enabled
    monkeypatch.setenv("RELAY_SERVICEBUS_NAMESPACE", "x.servicebus.windows.net")
    assert Settings().servicebus_enabled


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"RELAY_MAX_QUEUE_DEPTH": "abc"}, "RELAY_MAX_QUEUE_DEPTH='abc' is invalid: expected an integer >= 1"),
        ({"RELAY_POLL_DELAY_SECONDS": "0"}, "RELAY_POLL_DELAY_SECONDS='0' is invalid: expected a number > 0"),
        ({"RELAY_ACCESS_LOG": "maybe"}, "RELAY_ACCESS_LOG='maybe' is invalid: expected true or false (1/0, yes/no)"),
        (
            {"RELAY_LOG_LEVEL": "chatty"},
            "RELAY_LOG_LEVEL='chatty' is invalid: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ),
        (
            {"RELAY_REDIS_URL": "localhost:6380"},
            "RELAY_REDIS_URL='localhost:6380' is invalid: expected a URL starting with redis://, rediss:// or "
            "unix:// (e.g. redis://localhost:6380)",
        ),
        (  # a password in the URL is never echoed
            {"RELAY_REDIS_URL": "http://user:s3cr3t@cache:6379/0"},
            "RELAY_REDIS_URL='http://***@cache:6379/0' is invalid: expected a URL starting with redis://, rediss:// "
            "or unix://",
        ),
        ({"RELAY_MAX_TRIES": "x"}, "RELAY_MAX_TRIES='x' is invalid: expected an integer >= 1"),  # the old name
    ],
)
def test_a_bad_variable_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == line
    assert caught.value.code == CONFIG_ERROR_EXIT_CODE == 78


def test_a_password_in_a_url_is_masked_in_the_message_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_CORS_ORIGINS", "https://app.example.com,https://user:s3cr3t@other.example.com")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        "RELAY_CORS_ORIGINS='https://app.example.com,https://***@other.example.com' is invalid: "
        "'https://***@other.example.com' is not an origin: scheme://host[:port], no path or trailing slash"
    )


def test_a_check_across_variables_names_them_not_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_API_KEYS", "ops:s3cr3t")
    monkeypatch.setenv("RELAY_MAX_ARGS_BYTES", "2048")
    monkeypatch.setenv("RELAY_MAX_BODY_BYTES", "1024")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        "RELAY_MAX_ARGS_BYTES and RELAY_MAX_BODY_BYTES are invalid together: RELAY_MAX_ARGS_BYTES (2048) must not "
        "exceed RELAY_MAX_BODY_BYTES (1024)"
    )


def test_every_bad_variable_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_WORKER_CONCURRENCY", "0")
    monkeypatch.setenv("RELAY_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == [
        "RELAY_WORKER_CONCURRENCY='0' is invalid: expected an integer >= 1",
        "RELAY_HEARTBEAT_SECONDS='soon' is invalid: expected a number > 0",
    ]


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"


def test_max_tries_still_works_under_its_new_name_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_MAX_TRIES", "3")
    settings = Settings()
    assert settings.max_pickups == 3
    assert environment_warnings({"RELAY_MAX_TRIES": "3"}) == [
        "RELAY_MAX_TRIES is deprecated: rename it RELAY_MAX_PICKUPS (until then it is read as RELAY_MAX_PICKUPS)"
    ]
    monkeypatch.setenv("RELAY_MAX_PICKUPS", "4")
    assert Settings().max_pickups == 4  # both set: the new name wins


def test_no_warning_for_real_settings() -> None:
    assert environment_warnings({"RELAY_MAX_PICKUPS": "2", "RELAY_REDIS_URL": "redis://x", "PATH": "/bin"}) == []


def test_an_unknown_relay_variable_is_named_with_the_closest_setting() -> None:
    assert environment_warnings({"RELAY_MAX_QUEUE_DEPT": "5", "RELAY_NOTHING_LIKE_IT": "1"}) == [
        "RELAY_MAX_QUEUE_DEPT is not a Relay setting; it is ignored (did you mean RELAY_MAX_QUEUE_DEPTH?)",
        "RELAY_NOTHING_LIKE_IT is not a Relay setting; it is ignored",
    ]


def test_output_limits_are_checked_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #27's limits: each bad value names its variable, and a task's log must hold its largest event."""
    monkeypatch.setenv("RELAY_MAX_RESULT_BYTES", "100")
    monkeypatch.setenv("RELAY_ERROR_TRACEBACKS", "perhaps")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == [
        "RELAY_ERROR_TRACEBACKS='perhaps' is invalid: expected true or false (1/0, yes/no)",
        "RELAY_MAX_RESULT_BYTES='100' is invalid: expected an integer >= 1024",
    ]
    monkeypatch.delenv("RELAY_MAX_RESULT_BYTES")
    monkeypatch.delenv("RELAY_ERROR_TRACEBACKS")
    monkeypatch.setenv("RELAY_MAX_EVENT_BYTES", "2000000")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        "RELAY_MAX_EVENT_BYTES and RELAY_EVENT_LOG_MAX_BYTES are invalid together: RELAY_MAX_EVENT_BYTES (2000000) "
        "must not exceed RELAY_EVENT_LOG_MAX_BYTES (1048576): a task's log must hold its largest event"
    )
    monkeypatch.delenv("RELAY_MAX_EVENT_BYTES")
    assert Settings().max_event_bytes == 65_536  # the defaults fit together
