"""Settings: read from RELAY_* variables, and the README's table lists exactly those."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_setting() -> None:
    documented = set(re.findall(r"^\| `(RELAY_[A-Z_]+)` \|", README.read_text(), flags=re.MULTILINE))
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
