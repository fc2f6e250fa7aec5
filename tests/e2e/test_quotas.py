"""Per-API-key quotas, shared by two real API processes through one real Redis: the submit rate and the
number of tasks not yet ended. Usage shows in /metrics by key NAME, never the key."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.harness.client import submit, submit_ok, wait_state
from shared import keys
from tests.conftest import StartApi, StartWorker

ALICE = {"X-API-Key": "alice-secret-key-1"}
BOB = {"X-API-Key": "bob-secret-key-2"}
KEYS = "alice:alice-secret-key-1,bob:bob-secret-key-2"
DEFERRED = {"task": "echo", "delay_seconds": 600}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def code(response: httpx.Response) -> str:
    value: str = response.json()["error"]["code"]
    return value


def burst(bases: list[str], headers: dict[str, str], count: int) -> list[httpx.Response]:
    """``count`` concurrent submits, alternating between the API processes."""

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10, headers=headers) as client:
            posts = (client.post(f"{bases[i % len(bases)]}/tasks", json=DEFERRED) for i in range(count))
            return list(await asyncio.gather(*posts))

    return asyncio.run(run())


def test_active_tasks_cap_is_shared_by_api_processes(spawn_api: StartApi, redis_client: redis.Redis) -> None:
    env = {"RELAY_QUEUE_NAME": unique("q"), "RELAY_API_KEYS": KEYS, "RELAY_KEY_MAX_ACTIVE": "5"}
    _, first = spawn_api(**env)
    _, second = spawn_api(**env)

    responses = burst([first, second], ALICE, 12)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * 5 + [429] * 7  # one atomic check per submit, whichever process it reaches
    refused = next(r for r in responses if r.status_code == 429)
    assert code(refused) == "quota_exceeded"
    assert refused.headers["retry-after"] == "5"
    assert "RELAY_KEY_MAX_ACTIVE" in refused.json()["error"]["message"]
    assert submit(first, DEFERRED, headers=BOB).status_code == 202  # other keys are not affected
    alice_tasks = [r.json()["id"] for r in responses if r.status_code == 202]

    # An ended task frees its slot for both processes (aborting a waiting task ends it at once).
    assert httpx.delete(f"{first}/tasks/{alice_tasks[0]}", headers=ALICE, timeout=10).status_code == 200
    assert submit(second, DEFERRED, headers=ALICE).status_code == 202
    assert submit(first, DEFERRED, headers=ALICE).status_code == 429

    # An enqueue that refuses gives its reservation back: the id of Alice's ended task, with other arguments
    # (another key's id would not do: each key's ids are its own, see tests/e2e/test_tenants.py).
    assert httpx.delete(f"{first}/tasks/{alice_tasks[1]}", headers=ALICE, timeout=10).status_code == 200
    conflict = submit(second, {"task": "echo", "kwargs": {"message": "other"}, "id": alice_tasks[0]}, headers=ALICE)
    assert (conflict.status_code, code(conflict)) == (409, "id_conflict")
    assert submit(second, DEFERRED, headers=ALICE).status_code == 202  # the slot the 409 did not keep

    metrics = httpx.get(f"{second}/metrics", timeout=10).text
    assert 'relay_key_active_tasks{key="alice"} 5.0' in metrics
    assert 'relay_key_refused_total{code="quota_exceeded",key="alice"}' in metrics
    assert 'relay_key_submits_total{key="alice"}' in metrics
    assert "secret" not in metrics


def test_submit_rate_is_shared_by_api_processes(spawn_api: StartApi, on_redis: dict[str, str]) -> None:
    # One new token per 100 s: only the burst can pass while the test runs, however slow the machine.
    env = {
        "RELAY_QUEUE_NAME": unique("q"),
        "RELAY_API_KEYS": KEYS,
        "RELAY_KEY_SUBMIT_RATE": "0.01",
        "RELAY_KEY_SUBMIT_BURST": "4",
        **on_redis,
    }
    _, first = spawn_api(**env)
    _, second = spawn_api(**env)

    responses = burst([first, second], ALICE, 10)
    assert sorted(r.status_code for r in responses) == [202] * 4 + [429] * 6
    refused = [r for r in responses if r.status_code == 429]
    assert {code(r) for r in refused} == {"rate_limited"}
    assert all(1 <= int(r.headers["retry-after"]) <= 100 for r in refused)
    assert submit(second, DEFERRED, headers=BOB).status_code == 202

    metrics = httpx.get(f"{first}/metrics", timeout=10).text + httpx.get(f"{second}/metrics", timeout=10).text
    assert 'relay_key_refused_total{code="rate_limited",key="alice"}' in metrics
    assert "secret" not in metrics


def test_both_limits_are_one_check_and_a_refused_rate_reserves_nothing(
    spawn_api: StartApi, redis_client: redis.Redis
) -> None:
    """With a rate and a cap, each submit's admission is one script (one round trip): the rate first, and a
    submit it refuses takes no slot of the cap."""
    queue = unique("q")
    env = {
        "RELAY_QUEUE_NAME": queue,
        "RELAY_API_KEYS": KEYS,
        "RELAY_KEY_SUBMIT_RATE": "0.01",
        "RELAY_KEY_SUBMIT_BURST": "3",
        "RELAY_KEY_MAX_ACTIVE": "2",
    }
    _, base = spawn_api(**env)
    responses = [submit(base, DEFERRED, headers=ALICE) for _ in range(5)]
    assert [(r.status_code, code(r) if r.status_code != 202 else "") for r in responses] == [
        (202, ""),
        (202, ""),
        (429, "quota_exceeded"),  # a token taken, no slot left
        (429, "rate_limited"),  # the burst is spent: refused before the cap is looked at
        (429, "rate_limited"),
    ]
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    reserved = {m.decode().rsplit("~", 1)[-1] for m in redis_client.zrange(keys.quota_active(queue, "alice"), 0, -1)}
    assert reserved == accepted


def test_no_limits_means_no_quota_records(relay: str, redis_client: redis.Redis) -> None:
    """Unlimited (the default) costs no Redis work: nothing is recorded per key."""
    task_id = submit_ok(relay, {"task": "echo"})
    wait_state(relay, task_id, {"succeeded"})
    assert redis_client.keys(keys.quota_active("relay:queue", "*")) == []
    assert redis_client.keys(keys.quota_rate("relay:queue", "*")) == []
    assert 'relay_key_submits_total{key="anonymous"}' in httpx.get(f"{relay}/metrics", timeout=10).text


def workflow_state(base: str, flow: str, wanted: set[str]) -> str:
    """Poll ``GET /workflows/{id}`` as Alice until its state is one of ``wanted`` (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        state: str = httpx.get(f"{base}/workflows/{flow}", headers=ALICE, timeout=10).json()["state"]
        if state in wanted or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_a_workflow_retry_counts_against_the_cap_as_a_submit_does(
    spawn_api: StartApi, spawn_worker: StartWorker, tmp_path: Path
) -> None:
    """A retry is a new run, as ``POST /tasks/{id}/retry`` counts it: a key at its cap retried ended workflows one
    after another, each running steps past the cap."""
    env = {"RELAY_QUEUE_NAME": unique("q"), "RELAY_API_KEYS": KEYS, "RELAY_KEY_MAX_ACTIVE": "1"}
    spawn_worker(**env)
    _, base = spawn_api(**env)
    marker = tmp_path / "let-it-pass"
    step: dict[str, Any] = {"task": "fails_until", "kwargs": {"marker": str(marker)}}
    created = httpx.post(f"{base}/workflows", json={"workflow": {"chain": [step]}}, headers=ALICE, timeout=30)
    assert created.status_code == 202, created.text
    flow = created.json()["id"]
    assert workflow_state(base, flow, {"failed"}) == "failed"  # ended: its slot is free
    waiting = submit(base, DEFERRED, headers=ALICE)
    assert waiting.status_code == 202  # the key's one slot

    refused = httpx.post(f"{base}/workflows/{flow}/retry", headers=ALICE, timeout=10)
    assert (refused.status_code, code(refused)) == (429, "quota_exceeded")
    assert workflow_state(base, flow, {"failed"}) == "failed"  # not run again

    assert httpx.delete(f"{base}/tasks/{waiting.json()['id']}", headers=ALICE, timeout=10).status_code == 200
    marker.write_text("now")
    retried = httpx.post(f"{base}/workflows/{flow}/retry", headers=ALICE, timeout=10)
    assert retried.status_code == 202, retried.text
    assert workflow_state(base, flow, {"succeeded"}) == "succeeded"
