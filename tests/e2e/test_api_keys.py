"""Named API keys (so one can be rotated without downtime), the old unnamed form, and what the logs and
metrics say about them: names, never keys. Real API processes."""

from __future__ import annotations

import httpx

from bench.harness.client import submit
from bench.harness.processes import wait_until
from tests.conftest import StartApi

DEFERRED = {"task": "echo", "delay_seconds": 600}


def test_named_and_unnamed_keys_are_accepted_and_shown_by_name(spawn_api: StartApi) -> None:
    # Mid-rotation: the old unnamed key (named "key1" by position) and the new named one both work.
    api, base = spawn_api(RELAY_API_KEYS="old-unnamed-key-0001, ci:new-ci-key-0002")
    assert submit(base, DEFERRED, headers={"X-API-Key": "old-unnamed-key-0001"}).status_code == 202
    assert submit(base, DEFERRED, headers={"Authorization": "Bearer new-ci-key-0002"}).status_code == 202
    assert submit(base, DEFERRED, headers={"X-API-Key": "ci"}).status_code == 401  # a name is not a key
    assert submit(base, DEFERRED, headers={"X-API-Key": "ci:new-ci-key-0002"}).status_code == 401

    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert 'relay_key_submits_total{key="key1"} 1.0' in metrics
    assert 'relay_key_submits_total{key="ci"} 1.0' in metrics
    wait_until(lambda: "API keys accepted: key1, ci" in api.output(), 10, "the accepted key names in the log")
    for secret in ("old-unnamed-key-0001", "new-ci-key-0002"):
        assert secret not in metrics
        assert secret not in api.output()


def test_auth_off_is_announced_with_a_warning(spawn_api: StartApi) -> None:
    api, base = spawn_api()
    assert submit(base, DEFERRED).status_code == 202
    wait_until(lambda: "WARNING" in api.output() and "authentication is OFF" in api.output(), 10, "the warning")


def test_a_bad_key_list_stops_the_api_without_printing_keys(spawn_api: StartApi) -> None:
    api, _ = spawn_api(RELAY_API_KEYS="ci:first-secret-0003,web:first-secret-0003", wait_ready=False)
    assert api.wait(30) == 78  # a setting error, as any other (shared/settings.py)
    assert "this key is used twice" in api.output()
    assert "secret-000" not in api.output()
