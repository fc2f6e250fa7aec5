"""What autoscalers and the depth limit see: tasks due now, deferred ones (delays, run_at, retry backoffs) and
running ones, apart. Before (ffe2490) one ``relay_queue_depth`` counted all three: 1,000 tasks deferred to next
week scaled workers to the maximum."""

from __future__ import annotations

import re
import uuid

import httpx

from bench.harness.client import submit, submit_ok, wait_state
from bench.harness.processes import wait_until
from tests.conftest import StartApi, StartWorker


def gauges(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {name: float(value) for name, value in re.findall(r"^(relay_queue_\w+) (\S+)$", text, re.MULTILINE)}


def test_due_deferred_and_running_are_counted_apart(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": f"relay:gauge:{uuid.uuid4().hex[:8]}", "RELAY_MAX_QUEUE_DEPTH": "6"}
    _, base = spawn_api(**env)
    for _ in range(3):
        submit_ok(base, {"task": "echo", "delay_seconds": 3600})
    for _ in range(2):
        submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 30, "steps": 30}})
    assert gauges(base) == {
        "relay_queue_due": 2,
        "relay_queue_deferred": 3,
        "relay_queue_running": 0,
        "relay_queue_active": 2,  # what workers scale on: due or running, never deferred
    }
    submit_ok(base, {"task": "echo", "delay_seconds": 3600})
    # The depth limit counts what waits, due or deferred (it bounds what Redis holds): 6 reached.
    refused = submit(base, {"task": "echo"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "queue_full")
    spawn_worker(**env)
    wait_until(lambda: gauges(base)["relay_queue_running"] == 2, 20, "both sleeps running")
    assert gauges(base) == {
        "relay_queue_due": 0,
        "relay_queue_deferred": 4,
        "relay_queue_running": 2,
        "relay_queue_active": 2,  # busy workers are still needed: due alone (0) would scale them in
    }
    assert submit(base, {"task": "echo", "id": "after-start"}).status_code == 202  # running ones do not count
    wait_state(base, "after-start", {"succeeded"})
