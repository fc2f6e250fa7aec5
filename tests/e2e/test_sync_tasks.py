"""Plain ``def`` tasks (what Celery taught) run in the worker's thread pool: events from the thread, timeouts
and aborts honoured as far as Python allows (the thread is told, through ``task.cancelled``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from bench.harness.client import read_events, state, submit_ok, types, wait_state
from bench.harness.processes import wait_until
from tests.conftest import StartApi, StartWorker

FINAL = {"succeeded", "failed", "aborted"}


@pytest.fixture
def stack(spawn_api: StartApi, spawn_worker: StartWorker) -> str:
    env = {"RELAY_QUEUE_NAME": f"relay:sync:{uuid.uuid4().hex[:8]}", "RELAY_SYNC_TASK_THREADS": "2"}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    return base


def test_a_plain_def_task_runs_and_returns(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "sync_add", "args": [2, 3]})
    assert wait_state(stack, task_id, FINAL)["result"] == 5


def test_progress_from_the_thread_is_streamed(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "sync_steps", "kwargs": {"seconds": 0.4, "steps": 4}})
    events = read_events(stack, task_id)
    assert types(events) == ["started", "progress", "progress", "progress", "progress", "result", "end"]
    assert [e["data"]["current"] for e in events if e["type"] == "progress"] == [1, 2, 3, 4]


def test_two_plain_tasks_run_side_by_side(stack: str) -> None:
    ids = [submit_ok(stack, {"task": "sync_steps", "kwargs": {"seconds": 1.0, "steps": 2}}) for _ in range(2)]
    runs = [read_events(stack, task_id) for task_id in ids]
    starts = [next(e["ts"] for e in run if e["type"] == "started") for run in runs]
    ends = [next(e["ts"] for e in run if e["type"] == "result") for run in runs]
    assert max(starts) < min(ends)  # both threads were running at once


def test_the_thread_pool_bounds_how_many_plain_tasks_run_at_once(stack: str) -> None:
    """Three plain tasks on two threads (RELAY_SYNC_TASK_THREADS=2): the third's first step comes only after
    one of the others has returned (the worker has free slots; the pool is what makes it wait)."""
    ids = [submit_ok(stack, {"task": "sync_steps", "kwargs": {"seconds": 1.0, "steps": 2}}) for _ in range(3)]
    runs = [read_events(stack, task_id) for task_id in ids]
    first_steps = [next(e["ts"] for e in run if e["type"] == "progress") for run in runs]
    ends = [next(e["ts"] for e in run if e["type"] == "result") for run in runs]
    last = first_steps.index(max(first_steps))
    others_end = min(end for i, end in enumerate(ends) if i != last)
    assert first_steps[last] >= others_end + 0.4  # its first 0.5 s step began once a thread was free


def test_a_plain_task_past_its_timeout_fails_and_is_told_to_stop(stack: str, tmp_path: Path) -> None:
    noticed = tmp_path / "noticed"
    body = {"task": "sync_until_cancelled", "kwargs": {"noticed": str(noticed)}, "timeout_seconds": 0.5}
    task_id = submit_ok(stack, body)
    events = read_events(stack, task_id)
    assert types(events) == ["started", "error", "end"]
    assert events[1]["data"]["error_type"] == "TaskTimedOut"
    # The run ended at its timeout; the thread, which Python cannot stop, saw task.cancelled and returned.
    # The task opens the file, then writes its line: wait for the line, not only the file.
    wait_until(lambda: noticed.exists() and noticed.read_text().endswith("\n"), 10, "the thread to notice it")
    assert noticed.read_text() == f"{task_id} noticed task.cancelled\n"


def test_a_plain_task_can_be_aborted(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "sync_steps", "kwargs": {"seconds": 10, "steps": 100}})
    wait_state(stack, task_id, {"running"})
    assert httpx.delete(f"{stack}/tasks/{task_id}", timeout=10).status_code == 202
    assert wait_state(stack, task_id, FINAL)["state"] == "aborted"
    assert types(read_events(stack, task_id))[-2:] == ["aborted", "end"]
    assert state(stack, task_id)["error"]["message"] == "aborted while running"
