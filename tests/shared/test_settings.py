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
        (
            {"RELAY_POLL_DELAY_SECONDS": "0"},
            "RELAY_POLL_DELAY_SECONDS='0' is invalid: expected a number > 0 and <= 3600",
        ),
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
        "RELAY_HEARTBEAT_SECONDS='soon' is invalid: expected a number > 0 and <= 3600",
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


FLOAT_SETTINGS = sorted(name for name, field in Settings.model_fields.items() if field.annotation is float)
# Durations, in seconds unless the name says ms: each bounded so that in ms it stays an integer Redis takes exactly.
DURATIONS = sorted(name for name in Settings.model_fields if name.endswith(("_seconds", "_ms")))


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_no_float_setting_takes_inf_or_nan(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    # inf passed gt=0, then broke every submit (round(inf) in shared/enqueue.py) or the start with a traceback.
    monkeypatch.setenv(f"RELAY_{name.upper()}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems[0].startswith(f"RELAY_{name.upper()}='{value}' is invalid: expected a number")


def test_every_duration_has_an_upper_bound_far_below_what_redis_takes() -> None:
    for name in DURATIONS:
        bounds = [m.le for m in Settings.model_fields[name].metadata if hasattr(m, "le")]
        assert bounds, f"RELAY_{name.upper()} has no upper bound"
        assert bounds[0] * (1 if name.endswith("_ms") else 1000) < 1e14, name


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (  # 1e16 s: the worker could never record an outcome (Redis: "value is not an integer or out of range")
            "RELAY_RESULT_TTL_SECONDS",
            "10000000000000000",
            "RELAY_RESULT_TTL_SECONDS='10000000000000000' is invalid: expected an integer >= 1 and <= 315360000",
        ),
        ("RELAY_LEASE_SECONDS", "1e300", "RELAY_LEASE_SECONDS='1e300' is invalid: expected a number >= 1 and <= 86400"),
        (
            "RELAY_JOB_TIMEOUT_SECONDS",
            "1e300",
            "RELAY_JOB_TIMEOUT_SECONDS='1e300' is invalid: expected a number > 0 and <= 2592000",
        ),
    ],
)
def test_huge_durations_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, line: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == [line]


def test_the_longest_durations_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in {
        "RELAY_RESULT_TTL_SECONDS": "315360000",  # ten years
        "RELAY_LEASE_SECONDS": "86400",
        "RELAY_JOB_TIMEOUT_SECONDS": "2592000",  # 30 days
        "RELAY_HEARTBEAT_SECONDS": "3600",
    }.items():
        monkeypatch.setenv(variable, value)
    settings = Settings()
    assert (settings.result_ttl_seconds, settings.job_timeout_seconds) == (315_360_000, 2_592_000)


@pytest.mark.parametrize(
    ("keys", "line"),
    [
        ("ops:s3cr3t-1,bad name:s3cr3t-2", "entry 2: a name is letters, digits, '_', '.', '-' (max 64)"),
        ("s3cr3t-1,s3cr3t-1", "entry 2: this key is used twice"),
        ("anonymous:s3cr3t-1", "entry 1: the name 'anonymous' is reserved"),
        ("s3cr3t-1:", "entry 1: the key is empty"),  # what comes before ':' may be a key given without a name
        ("ops:s3cr3t-\udcff", "entry 1: the key is not valid UTF-8"),  # bytes that are not UTF-8, as Python reads them
    ],
)
def test_a_bad_api_key_list_is_a_setting_error_without_the_keys(
    monkeypatch: pytest.MonkeyPatch, keys: str, line: str
) -> None:
    # It was found by create_app (after the settings were read): Sanic's traceback and exit code 0.
    monkeypatch.setenv("RELAY_API_KEYS", keys)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == [f"RELAY_API_KEYS=(hidden) is invalid: {line}"]
    assert "s3cr3t" not in str(caught.value)
