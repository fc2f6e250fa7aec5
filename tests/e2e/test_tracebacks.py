"""A task that raises shows where (issue #24, item 1): the traceback of its own code, without Relay's, arq's or
asyncio's frames and bounded in size, is in its failed and retrying events' error, in GET's error, and in an
ERROR line of the worker log naming the task and its id; ``RELAY_ERROR_TRACEBACKS=false`` keeps it out of what
is stored (the log still has it). Real API and worker processes; the tasks are in ``tests/support/tasks.py``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bench.harness.client import read_events, submit_ok, types, wait_state
from bench.harness.processes import ManagedProcess, wait_until
from tests.conftest import StartApi, StartWorker

FINAL = {"failed", "succeeded"}
MACHINERY = ("worker/engine", "asyncio", "concurrent", "arq", "threading.py", "contextvars")


def start(spawn_api: StartApi, spawn_worker: StartWorker, **env: str) -> tuple[str, ManagedProcess]:
    env = {"RELAY_QUEUE_NAME": f"relay:tb:{uuid.uuid4().hex[:8]}", **env}
    _, base = spawn_api(**env)
    return base, spawn_worker(**env)


def assert_the_tasks_own_traceback(text: str, task: str) -> None:
    assert text.startswith("Traceback (most recent call last):")
    assert "tests/support/tasks.py" in text
    assert f"in {task}\n" in text
    assert "in _divide\n" in text
    assert "return 1 / x" in text  # the line that raised
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")
    for frame_of in MACHINERY:
        assert frame_of not in text, f"{frame_of} in:\n{text}"


def logged_error(worker: ManagedProcess, task_id: str) -> str:
    """The worker's ERROR record for ``task_id``, with the lines of its traceback."""
    found: list[str] = []

    def logged() -> bool:
        lines = worker.output().splitlines()
        for i, line in enumerate(lines):
            if "ERROR" in line and task_id in line:
                found[:] = lines[i : i + 12]
                return any("ZeroDivisionError: division by zero" in more for more in found)
        return False

    wait_until(logged, 10, f"an ERROR line for {task_id}")
    return "\n".join(found)


@pytest.mark.parametrize("task", ["explode", "explode_sync"])
def test_a_failed_tasks_error_and_log_carry_its_own_traceback(
    spawn_api: StartApi, spawn_worker: StartWorker, task: str
) -> None:
    base, worker = start(spawn_api, spawn_worker)
    task_id = submit_ok(base, {"task": task, "kwargs": {"x": 0}})
    error = wait_state(base, task_id, FINAL)["error"]
    assert (error["error_type"], error["message"]) == ("ZeroDivisionError", "division by zero")
    assert_the_tasks_own_traceback(error["traceback"], task)

    events = read_events(base, task_id)
    assert types(events) == ["started", "error", "end"]
    assert events[1]["data"] == error

    log = logged_error(worker, task_id)
    assert task in log.splitlines()[0]  # the task's name and id on the ERROR line itself
    assert "in _divide" in log
    assert "return 1 / x" in log

    # A failure that is no raise of the task's (a result that is not JSON) has no frames of the task's to
    # show, and Relay's own are never shown.
    task_id = submit_ok(base, {"task": "not_json"})
    error = wait_state(base, task_id, FINAL)["error"]
    assert error["error_type"] == "ResultNotSerializable"
    assert "traceback" not in error


def test_an_event_refused_inside_relay_shows_the_tasks_call(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    base, _ = start(spawn_api, spawn_worker, RELAY_MAX_EVENT_BYTES="4096")
    task_id = submit_ok(base, {"task": "swallows_big_event", "kwargs": {"size_bytes": 5000}})
    error = wait_state(base, task_id, FINAL)["error"]
    assert error["error_type"] == "EventTooLarge"
    text = error["traceback"]
    assert "in swallows_big_event" in text
    assert 'await task.partial("x" * size_bytes)' in text  # ends at the task's own call, not inside Relay
    assert "worker/context.py" not in text
    assert "worker/engine" not in text


def test_a_retried_failure_carries_its_traceback_too(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    base, _ = start(spawn_api, spawn_worker)
    task_id = submit_ok(base, {"task": "explode_retried", "kwargs": {"x": 0}})
    wait_state(base, task_id, FINAL)
    events = read_events(base, task_id)
    assert types(events) == ["started", "retrying", "started", "error", "end"]
    assert_the_tasks_own_traceback(events[1]["data"]["error"]["traceback"], "explode_retried")


def test_a_long_traceback_is_cut_to_its_bound(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    base, _ = start(spawn_api, spawn_worker)
    task_id = submit_ok(base, {"task": "explodes_at_length", "kwargs": {"size": 50_000}})
    error: dict[str, Any] = wait_state(base, task_id, FINAL)["error"]
    assert len(error["traceback"]) < 8100
    assert error["traceback"].startswith("Traceback (most recent call last):")
    assert "characters cut" in error["traceback"]
    assert len(error["message"]) < 2100  # the message is bounded too


def test_tracebacks_can_be_kept_out_of_stored_errors(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    base, worker = start(spawn_api, spawn_worker, RELAY_ERROR_TRACEBACKS="false")
    task_id = submit_ok(base, {"task": "explode", "kwargs": {"x": 0}})
    error = wait_state(base, task_id, FINAL)["error"]
    assert error == {"error_type": "ZeroDivisionError", "message": "division by zero"}
    assert all("traceback" not in str(e["data"]) for e in read_events(base, task_id))
    assert "in _divide" in logged_error(worker, task_id)  # the operator's log still has it
