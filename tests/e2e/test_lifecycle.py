"""Every accepted task reaches exactly one final state that clients see, once, in Relay's words.

Each test here failed on the code before the task core was rewritten (commit 9309c4b): arq's own exits
published nothing, a loop-blocking task was re-queued instead of failed, event numbering restarted after a
silence longer than the log's TTL, a duplicate submit always said ``queued``.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import httpx
import pytest
import redis

from bench.harness.client import read_events, state, submit, submit_ok, types, wait_state
from bench.harness.processes import wait_until
from shared import keys
from shared.jobs import JobRecord, fingerprint
from tests.conftest import StartApi, StartWorker

FINAL = {"succeeded", "failed", "aborted"}


@pytest.fixture
def queue() -> str:
    return f"relay:life:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def stack(queue: str, spawn_api: StartApi, spawn_worker: StartWorker) -> str:
    _, base = spawn_api(RELAY_QUEUE_NAME=queue)
    spawn_worker(RELAY_QUEUE_NAME=queue)
    return base


def put_job(client: redis.Redis, queue: str, task_id: str, function: str, due_ms: int | None = None) -> None:
    """A job record as Relay's enqueue writes it, placed straight into the queue (what another deployment with
    other task modules, or a hand-made job, leaves there)."""
    kwargs = {"params": {}}
    record = JobRecord(function, kwargs, int(time.time() * 1000), fingerprint(function, kwargs)).encode()
    client.set(keys.job(task_id), record)
    client.zadd(queue, {task_id: due_ms or int(time.time() * 1000)})
    client.zadd(keys.task_index(queue), {task_id: time.time_ns() // 1000})
    client.publish(keys.wakeup_channel(queue), b"j")


def test_a_job_for_a_task_this_worker_lacks_waits_for_one_that_runs_it(
    stack: str, queue: str, redis_client: redis.Redis
) -> None:
    """Workers claim only the tasks they run: a job for another task is left waiting, with the reason in GET,
    while the worker goes on with the jobs behind it (before lanes it was failed NotRunnable)."""
    put_job(redis_client, queue, "gone-1", "no_such_task")
    put_job(redis_client, queue, "behind-gone-1", "echo")
    assert wait_state(stack, "behind-gone-1", FINAL)["state"] == "succeeded"
    view = httpx.get(f"{stack}/tasks/gone-1").json()
    assert view["state"] == "queued"
    assert view["tries"] == 0
    assert view["waiting_reason"] == "waiting for a worker that runs 'no_such_task'"
    # A record from before named queues names no lane: the claim moved it to its task's bare lane.
    assert redis_client.zscore(keys.lane(queue, "no_such_task"), "gone-1") is not None


def test_a_job_whose_record_vanished_fails_with_its_events(stack: str, queue: str, redis_client: redis.Redis) -> None:
    redis_client.zadd(queue, {"vanished-1": int(time.time() * 1000)})
    redis_client.publish(keys.wakeup_channel(queue), b"j")
    events = read_events(stack, "vanished-1")
    assert types(events) == ["error", "end"]
    assert events[0]["data"]["error_type"] == "JobRecordMissing"
    assert redis_client.zscore(queue, "vanished-1") is None


def test_a_job_out_of_tries_fails_with_its_events(stack: str, queue: str, redis_client: redis.Redis) -> None:
    put_job(redis_client, queue, "spent-1", "echo", due_ms=int(time.time() * 1000) + 60_000)
    redis_client.set(keys.tries("spent-1"), 5)  # RELAY_MAX_TRIES pickups already used
    redis_client.zadd(queue, {"spent-1": int(time.time() * 1000)})
    redis_client.publish(keys.wakeup_channel(queue), b"j")
    final = wait_state(stack, "spent-1", FINAL)
    assert final["state"] == "failed"
    assert final["error"]["error_type"] == "TriesExhausted"
    assert types(read_events(stack, "spent-1")) == ["error", "end"]


async def test_arq_abort_of_a_deferred_job_ends_it_with_its_events(stack: str, queue: str, redis_url: str) -> None:
    from arq.connections import ArqRedis
    from arq.jobs import Job

    from shared.serialization import loads

    # A waiting job sits in its task's lane (shared/keys.py), not in arq's queue: arq's Job.abort cannot move it to
    # the front, and its wait for the result stops at once (False: arq does not know). The abort request is
    # honoured when the job falls due (Relay's DELETE ends a waiting job at once).
    task_id = submit_ok(stack, {"task": "echo", "delay_seconds": 2})
    pool = ArqRedis.from_url(redis_url)
    try:
        job = Job(task_id, pool, _queue_name=queue, _deserializer=loads)
        assert await job.abort(timeout=10, poll_delay=0.05) is False
    finally:
        await pool.aclose()
    wait_state(stack, task_id, {"aborted"})
    # arq's Job.abort (not Relay's DELETE): the worker aborts it before start, with events and a result.
    events = read_events(stack, task_id)
    assert types(events) == ["aborted", "end"]
    final = state(stack, task_id)
    assert final["state"] == "aborted"
    assert final["started_at"] is None
    assert final["error"] == {"error_type": "Aborted", "message": "aborted before it started"}


def test_an_abort_request_left_by_an_earlier_task_of_the_id_is_ignored(stack: str, redis_client: redis.Redis) -> None:
    task_id = f"reused-{uuid.uuid4().hex[:8]}"
    redis_client.zadd(keys.ABORT_SET, {task_id: int(time.time() * 1000) - 1000})  # from before this submit
    submit_ok(stack, {"task": "echo", "id": task_id})
    assert wait_state(stack, task_id, FINAL)["state"] == "succeeded"


def test_a_running_job_ignores_an_abort_request_older_than_its_enqueue(
    queue: str, stack: str, redis_client: redis.Redis
) -> None:
    task_id = submit_ok(stack, {"task": "sleep", "kwargs": {"seconds": 1, "steps": 2}})
    enqueued_at = wait_state(stack, task_id, {"running"})["enqueued_at"]
    enqueue_ms = int(dt.datetime.fromisoformat(enqueued_at).timestamp() * 1000)
    redis_client.zadd(keys.ABORT_SET, {task_id: enqueue_ms - 1000})  # meant for an earlier run of the id
    redis_client.publish(keys.wakeup_channel(queue), f"a{task_id}")  # the notice makes the worker check now
    assert wait_state(stack, task_id, FINAL)["state"] == "succeeded"


def test_a_task_blocking_the_loop_past_its_timeout_fails_and_is_not_requeued(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "blocks_loop", "kwargs": {"seconds": 8}})
    events = read_events(stack, task_id, timeout=60)
    assert types(events) == ["started", "error", "end"]
    assert events[1]["data"]["error_type"] == "TaskTimedOut"
    final = state(stack, task_id)
    assert final["state"] == "failed"
    assert final["tries"] == 1


def test_arq_retry_raised_by_a_task_is_a_retry_not_a_failure(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "asks_retry", "kwargs": {"times": 2}})
    events = read_events(stack, task_id)
    assert types(events) == ["started", "retrying", "started", "retrying", "started", "result", "end"]
    assert events[1]["data"]["error"]["error_type"] == "Retry"
    assert events[-2]["data"] == {"try": 3}


def test_arq_retry_honours_a_submit_that_lowered_the_retries(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "asks_retry", "kwargs": {"times": 1}, "max_retries": 0})
    final = wait_state(stack, task_id, FINAL)
    assert final["state"] == "failed"
    assert final["error"]["error_type"] == "TriesExhausted"
    assert final["tries"] == 1
    assert types(read_events(stack, task_id)) == ["started", "error", "end"]


@pytest.mark.parametrize("how", ["future", "gather"])
def test_a_task_whose_own_code_is_cancelled_fails_once(stack: str, how: str) -> None:
    """A ``CancelledError`` from the task's own code is no abort, lease loss or shutdown: the try fails (its
    policy retries nothing), and is never given back to run again and again."""
    task_id = submit_ok(stack, {"task": "cancels_itself", "kwargs": {"how": how}})
    final = wait_state(stack, task_id, FINAL)
    assert final["state"] == "failed"
    assert final["error"]["error_type"] == "CancelledError"
    assert "own code" in final["error"]["message"]
    assert final["tries"] == 1
    events = types(read_events(stack, task_id))
    assert events == ["started", "error", "end"]


def test_numbering_never_restarts_after_the_log_expires_during_a_silence(
    queue: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": queue, "RELAY_RESULT_TTL_SECONDS": "1"}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    task_id = submit_ok(base, {"task": "chatty_then_quiet", "kwargs": {"events": 3, "quiet": 2.5}})
    with httpx.stream("GET", f"{base}/tasks/{task_id}/events", timeout=30) as response:
        seqs = [e["seq"] for e in map(_json, response.iter_lines()) if e and e["type"] != "heartbeat"]
    # started, 3 progress, (the log expires), 1 progress, result, end: numbered on, never from 1 again
    assert seqs == [1, 2, 3, 4, 5, 6, 7]


def test_a_late_reader_is_told_which_events_the_log_lost(
    queue: str, spawn_api: StartApi, spawn_worker: StartWorker, redis_client: redis.Redis
) -> None:
    env = {"RELAY_QUEUE_NAME": queue, "RELAY_RESULT_TTL_SECONDS": "1"}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    task_id = submit_ok(base, {"task": "chatty_then_quiet", "kwargs": {"events": 3, "quiet": 2.5}})
    wait_state(base, task_id, {"running"})
    wait_until(lambda: redis_client.exists(keys.events_stream(task_id)) == 0, 10, "the log to expire in the silence")
    events = read_events(base, task_id)
    assert events[0]["type"] == "gap"
    assert events[0]["data"] == {"first_seq": 1, "last_seq": 4}
    assert [e["seq"] for e in events] == [4, 5, 6, 7]
    assert types(events)[-1] == "end"


def test_a_repeated_submit_reports_the_real_state(stack: str) -> None:
    task_id = f"dup-{uuid.uuid4().hex[:8]}"
    body = {"task": "echo", "id": task_id, "kwargs": {"message": "once"}}
    assert submit(stack, body).status_code == 202
    wait_state(stack, task_id, {"succeeded"})
    again = submit(stack, body)
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["state"] == "succeeded"


def test_a_running_task_shows_when_it_started_and_its_timeout(stack: str) -> None:
    task_id = submit_ok(stack, {"task": "sleep", "kwargs": {"seconds": 5, "steps": 5}})
    running = wait_state(stack, task_id, {"running"})
    assert running["started_at"] is not None
    assert running["timeout_seconds"] == 300.0  # the default: the task registers none, the submit gave none
    assert running["tries"] == 1
    httpx.delete(f"{stack}/tasks/{task_id}", timeout=10)


def test_a_waiting_job_record_never_expires(stack: str, redis_client: redis.Redis) -> None:
    task_id = submit_ok(stack, {"task": "echo", "delay_seconds": 3600})
    assert redis_client.pttl(keys.job(task_id)) == -1  # it waits as long as it takes; no silent "expired"
    assert state(stack, task_id)["state"] == "deferred"
    httpx.delete(f"{stack}/tasks/{task_id}", timeout=10)


def _json(line: str) -> dict[str, object] | None:
    import json

    return json.loads(line) if line.strip() else None
