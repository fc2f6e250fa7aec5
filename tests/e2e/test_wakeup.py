"""Idle workers pick jobs up on the enqueue notice, not on their next poll."""

from __future__ import annotations

import uuid

import httpx

from bench.harness.client import read_events, submit_ok, types, wait_state
from tests.conftest import StartApi, StartWorker


def test_idle_worker_wakes_for_a_new_job_and_for_an_abort(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {
        "RELAY_QUEUE_NAME": f"relay:wake:{uuid.uuid4().hex[:8]}",
        "RELAY_POLL_DELAY_SECONDS": "60",
        # The worker also wakes when the earliest lease it knows of lapses (the running job's own): a lease
        # longer than the poll keeps that from finding the abort before the notice does.
        "RELAY_LEASE_SECONDS": "120",
    }
    _, base = spawn_api(**env)
    spawn_worker(**env)
    # With a one-minute poll and a two-minute lease these bounds can only be met through the wake-up notices
    # (with Engine.note_abort a no-op, the abort waits for the next poll, a minute away).
    task_id = submit_ok(base, {"task": "echo"})
    wait_state(base, task_id, {"succeeded"}, timeout=10)
    long_id = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 120, "steps": 120}})
    wait_state(base, long_id, {"running"}, timeout=10)
    assert httpx.delete(f"{base}/tasks/{long_id}", timeout=10).status_code == 202
    wait_state(base, long_id, {"aborted"}, timeout=10)
    assert types(read_events(base, long_id))[-2:] == ["aborted", "end"]
