"""Retry policies: declared where a task is registered, lowered (never raised) by a submit, with exponential
backoff and full jitter; and a failed or aborted task run again on request (``POST /tasks/{id}/retry``)."""

from __future__ import annotations

import datetime as dt
import signal
import time
import uuid

import httpx
import pytest
import redis

from bench.harness.client import read_events, state, submit, submit_ok, types, wait_state
from shared import keys
from tests.conftest import StartApi, StartWorker

FINAL = {"succeeded", "failed", "aborted"}


def _stack(spawn_api: StartApi, spawn_worker: StartWorker, **where: str) -> str:
    env = {"RELAY_QUEUE_NAME": f"relay:retry:{uuid.uuid4().hex[:8]}", **where}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    return base


@pytest.fixture
def stack(spawn_api: StartApi, spawn_worker: StartWorker) -> str:
    return _stack(spawn_api, spawn_worker)


@pytest.fixture
def stack_any(spawn_api: StartApi, spawn_worker: StartWorker, on_redis: dict[str, str]) -> str:
    """``stack`` on single Redis, then on a Redis Cluster."""
    return _stack(spawn_api, spawn_worker, **on_redis)


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def test_a_task_failing_twice_then_succeeding(stack_any: str) -> None:
    task_id = submit_ok(stack_any, {"task": "flaky", "kwargs": {"failures": 2}})
    events = read_events(stack_any, task_id)
    assert types(events) == ["started", "retrying", "started", "retrying", "started", "result", "end"]
    assert [e["seq"] for e in events] == list(range(1, 8))  # one log, numbered on across tries
    first, second = events[1]["data"], events[3]["data"]
    assert (first["try"], second["try"]) == (1, 2)
    assert (first["error"]["error_type"], first["error"]["message"]) == ("Flaky", "failing on try 1")
    # backoff 0.2 s doubling, capped at 1 s, full jitter: retry n waits within [0, 0.2 * 2**(n-1)]
    assert 0 <= first["delay_seconds"] <= 0.2
    assert 0 <= second["delay_seconds"] <= 0.4
    for retrying, started in ((events[1], events[2]), (events[3], events[4])):
        assert started["ts"] >= _ts(retrying["data"]["next_try_at"]) - 0.005  # not before its time
    assert events[-2]["data"] == {"succeeded_on_try": 3}
    final = state(stack_any, task_id)
    assert (final["state"], final["tries"]) == ("succeeded", 3)


def test_jitter_spreads_tasks_that_failed_together(stack: str) -> None:
    ids = [submit_ok(stack, {"task": "always_flaky", "max_retries": 1}) for _ in range(10)]
    delays = []
    for task_id in ids:
        events = read_events(stack, task_id)
        assert types(events) == ["started", "retrying", "started", "error", "end"]  # lowered to one retry
        delays.append(events[1]["data"]["delay_seconds"])
    assert all(0 <= d <= 2.0 for d in delays)  # backoff 2 s for the first retry
    assert len(set(delays)) >= 8  # full jitter: ten simultaneous failures do not come back together


def test_a_submit_may_lower_retries_but_never_raise_them(stack: str) -> None:
    response = submit(stack, {"task": "flaky", "max_retries": 4})  # its policy allows 3
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [{"loc": ["max_retries"], "msg": "must be <= 3"}]
    task_id = submit_ok(stack, {"task": "flaky", "kwargs": {"failures": 2}, "max_retries": 0})
    assert types(read_events(stack, task_id)) == ["started", "error", "end"]
    assert state(stack, task_id)["state"] == "failed"


def test_only_the_failures_a_policy_names_are_retried(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "wrong_failure"})
    assert types(read_events(stack, task_id)) == ["started", "error", "end"]
    timed_out = submit_ok(stack, {"task": "times_out", "timeout_seconds": 0.3})
    events = read_events(stack, timed_out)
    assert types(events) == ["started", "error", "end"]  # its policy does not retry timeouts
    assert events[1]["data"]["error_type"] == "TaskTimedOut"


def test_a_policy_may_retry_timeouts_and_get_shows_the_registered_timeout(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "times_out_retried"})
    events = read_events(stack, task_id)
    assert types(events) == ["started", "retrying", "started", "error", "end"]
    assert events[1]["data"]["error"]["error_type"] == "TaskTimedOut"
    assert events[3]["data"]["error_type"] == "TaskTimedOut"
    final = state(stack, task_id)
    assert (final["state"], final["tries"]) == ("failed", 2)
    assert final["timeout_seconds"] == 0.5  # its registration's, not the 300 s default


def test_a_task_waiting_for_its_retry_shows_it_and_can_be_aborted(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "flaky_slow_backoff"})
    waiting = wait_state(stack, task_id, {"retrying"})
    assert waiting["tries"] == 1
    last_error = waiting["last_error"]
    assert (last_error["error_type"], last_error["message"]) == ("Flaky", "waiting a minute before trying again")
    assert waiting["next_try_at"] == waiting["scheduled_for"]
    assert 0 <= _ts(waiting["next_try_at"]) - dt.datetime.now(dt.UTC).timestamp() <= 60
    response = httpx.delete(f"{stack}/tasks/{task_id}", timeout=10)
    assert (response.status_code, response.json()["state"]) == (200, "aborted")
    assert types(read_events(stack, task_id)) == ["started", "retrying", "aborted", "end"]
    assert state(stack, task_id)["state"] == "aborted"


def test_a_failed_task_runs_again_on_request_and_its_events_continue(stack_any: str) -> None:
    task_id = submit_ok(stack_any, {"task": "fail", "kwargs": {"message": "first"}})
    assert wait_state(stack_any, task_id, FINAL)["state"] == "failed"
    response = httpx.post(f"{stack_any}/tasks/{task_id}/retry", timeout=10)
    assert response.status_code == 202
    assert response.json()["state"] == "queued"
    wait_state(stack_any, task_id, {"failed"})
    events = read_events(stack_any, task_id)
    assert types(events) == ["started", "error", "end", "requeued", "started", "error", "end"]
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert events[3]["data"] == {"try": 2, "reason": "retry requested"}
    assert state(stack_any, task_id)["tries"] == 2
    resumed = read_events(stack_any, task_id, after=3)  # a client that saw the first end and comes back
    assert types(resumed) == ["requeued", "started", "error", "end"]


def test_only_an_ended_unsuccessful_task_can_be_retried(stack: str) -> None:
    running = submit_ok(stack, {"task": "sleep", "kwargs": {"seconds": 10, "steps": 10}})
    wait_state(stack, running, {"running"})
    response = httpx.post(f"{stack}/tasks/{running}/retry", timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_retryable")
    httpx.delete(f"{stack}/tasks/{running}", timeout=10)
    done = submit_ok(stack, {"task": "echo"})
    wait_state(stack, done, {"succeeded"})
    assert httpx.post(f"{stack}/tasks/{done}/retry", timeout=10).status_code == 409
    assert httpx.post(f"{stack}/tasks/nope-{uuid.uuid4().hex}/retry", timeout=10).status_code == 404
    aborted = submit_ok(stack, {"task": "echo", "delay_seconds": 60})
    httpx.delete(f"{stack}/tasks/{aborted}", timeout=10)
    assert httpx.post(f"{stack}/tasks/{aborted}/retry", timeout=10).status_code == 202
    assert wait_state(stack, aborted, FINAL)["state"] == "succeeded"


def test_an_abort_request_left_from_the_first_run_does_not_abort_a_manual_retry(
    stack: str, redis_client: redis.Redis
) -> None:
    task_id = submit_ok(stack, {"task": "fail", "kwargs": {"message": "first"}})
    assert wait_state(stack, task_id, FINAL)["state"] == "failed"
    # What a DELETE landing while the first run was ending as failed leaves (or arq's Job.abort on it).
    redis_client.zadd(keys.ABORT_SET, {task_id: int(time.time() * 1000)})
    response = httpx.post(f"{stack}/tasks/{task_id}/retry", timeout=10)
    assert (response.status_code, response.json()["state"]) == (202, "queued")
    events = read_events(stack, task_id, after=3)
    assert types(events) == ["requeued", "started", "error", "end"]  # it ran, as the retry asked
    assert state(stack, task_id)["state"] == "failed"


def test_a_lapsed_lease_ignores_an_abort_request_older_than_its_job(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_client: redis.Redis
) -> None:
    env = {"RELAY_QUEUE_NAME": f"relay:retry:{uuid.uuid4().hex[:8]}", "RELAY_LEASE_SECONDS": "1"}
    _, base = spawn_api(**env)
    victim = spawn_worker(**env)
    task_id = submit_ok(base, {"task": "hangs_first_try"})
    enqueued = _ts(wait_state(base, task_id, {"running"})["enqueued_at"])
    victim.send(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    # A request for an earlier task of the same id (made before this one was submitted), still in arq's set.
    redis_client.zadd(keys.ABORT_SET, {task_id: int(enqueued * 1000) - 5_000})
    spawn_worker(**env)
    final = wait_state(base, task_id, FINAL, timeout=60)
    assert (final["state"], final["tries"]) == ("succeeded", 2)
    assert types(read_events(base, task_id)) == ["started", "requeued", "started", "progress", "result", "end"]


@pytest.mark.parametrize(
    ("task", "kwargs", "error_type"),
    [
        ("flaky", {"failures": 10}, "Flaky"),  # fails every try with an error its policy retries
        ("asks_retry_always", {}, "TriesExhausted"),  # raises arq's Retry every try
        ("kills_worker_retried", {}, "WorkerLost"),  # its worker is lost on every try
    ],
)
def test_every_way_a_try_ends_gets_the_same_number_of_tries(
    spawn_api: StartApi, spawn_worker: StartWorker, task: str, kwargs: dict[str, int], error_type: str
) -> None:
    """One rule decides whether a try is the last (worker.engine.tries): three tasks of one policy (3 retries),
    each submitted with ``max_retries: 1``, get two tries whatever ends them (with the default RELAY_MAX_PICKUPS
    of 5, a lost worker's job got five before)."""
    env = {"RELAY_QUEUE_NAME": f"relay:retry:{uuid.uuid4().hex[:8]}", "RELAY_LEASE_SECONDS": "1"}
    _, base = spawn_api(**env)
    workers = [spawn_worker(**env) for _ in range(3 if task.startswith("kills") else 1)]
    task_id = submit_ok(base, {"task": task, "kwargs": kwargs, "max_retries": 1})
    final = wait_state(base, task_id, FINAL, timeout=60)
    assert (final["state"], final["error"]["error_type"], final["tries"]) == ("failed", error_type, 2)
    if len(workers) > 1:  # each try took one worker with it; a third would have taken the last
        assert sum(w.proc.poll() is None for w in workers) == 1
