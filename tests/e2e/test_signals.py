"""Real signals to real processes: nothing lost, exit code 0, no traceback."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import httpx

from bench.harness.client import ndjson_lines, read_events, state, submit, submit_ok, types, wait_state
from bench.harness.processes import ManagedProcess, wait_until
from tests.conftest import StartApi, StartWorker


def queue() -> str:
    return f"relay:test:{uuid.uuid4().hex[:10]}"


def assert_clean_exit(proc: ManagedProcess, timeout: float = 30) -> None:
    assert proc.wait(timeout) == 0, proc.output()
    assert "Traceback" not in proc.output()


def test_worker_sigterm_lets_running_job_finish_within_grace(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    q = queue()
    _, base = spawn_api(RELAY_QUEUE_NAME=q)
    worker = spawn_worker(RELAY_QUEUE_NAME=q, RELAY_WORKER_GRACE_SECONDS="20")
    task_id = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 1.5, "steps": 3}})
    wait_state(base, task_id, {"running"})
    worker.send(signal.SIGTERM)
    assert_clean_exit(worker)
    final = state(base, task_id)
    assert final["state"] == "succeeded"
    assert types(read_events(base, task_id)).count("started") == 1


def test_worker_sigterm_past_grace_requeues_to_another_worker(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    q = queue()
    _, base = spawn_api(RELAY_QUEUE_NAME=q)
    first = spawn_worker(RELAY_QUEUE_NAME=q, RELAY_WORKER_GRACE_SECONDS="1")
    # 10 s each: all must still be running when the 1 s grace ends. With 4 s, a CI run on a slow host took at least
    # 3 s to see all six running and start the replacement, and one task ended within the grace (no requeue).
    task_ids = [submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 10, "steps": 10}}) for _ in range(6)]
    for task_id in task_ids:
        wait_state(base, task_id, {"running"})
    spawn_worker(RELAY_QUEUE_NAME=q)  # the replacement, as in a rolling deploy
    first.send(signal.SIGTERM)
    assert_clean_exit(first)
    finals = [wait_state(base, t, {"succeeded", "failed", "aborted"}, timeout=30) for t in task_ids]
    assert [f["state"] for f in finals] == ["succeeded"] * len(task_ids)  # completed == submitted
    for task_id, final in zip(task_ids, finals, strict=True):
        events = types(read_events(base, task_id))
        assert events.count("requeued") == 1
        assert events.count("started") == 2
        assert events.count("end") == 1
        assert final["tries"] == 1  # the interrupted pickup was given back


def test_worker_sigterm_during_a_long_plain_task_exits_and_requeues(
    spawn_api: StartApi, spawn_worker: StartWorker, tmp_path: Path
) -> None:
    """Python cannot stop the thread of a plain ``def`` task: past the grace period its job is re-queued and the
    worker exits anyway, leaving the thread behind, instead of waiting for it (or hanging on its next event)."""
    q = queue()
    _, base = spawn_api(RELAY_QUEUE_NAME=q)
    first = spawn_worker(RELAY_QUEUE_NAME=q, RELAY_WORKER_GRACE_SECONDS="1")
    marker = tmp_path / "first-run"
    task_id = submit_ok(base, {"task": "sync_slow_first", "kwargs": {"marker": str(marker)}})
    wait_until(marker.exists, 20, "the task's first run to start")
    first.send(signal.SIGTERM)
    assert_clean_exit(first, timeout=1 + 5)
    assert f"task {task_id} sync_slow_first: its thread is still running and is abandoned" in first.output()
    assert state(base, task_id)["state"] == "queued"
    spawn_worker(RELAY_QUEUE_NAME=q)
    final = wait_state(base, task_id, {"succeeded", "failed", "aborted"}, timeout=30)
    assert final["state"] == "succeeded"
    assert final["result"] == "ran again"
    events = types(read_events(base, task_id))
    assert events == ["started", "requeued", "started", "result", "end"]


def test_worker_with_more_due_tasks_than_slots_still_stops_on_sigterm(
    spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """A stopping worker claims nothing, so the due tasks left in the queue must not make its idle loop
    spin without yielding: that froze its event loop, and with it the shutdown, until SIGKILL."""
    q = queue()
    _, base = spawn_api(RELAY_QUEUE_NAME=q)
    worker = spawn_worker(RELAY_QUEUE_NAME=q, RELAY_WORKER_CONCURRENCY="2", RELAY_WORKER_GRACE_SECONDS="1")
    task_ids = [submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 5, "steps": 5}}) for _ in range(6)]
    wait_until(lambda: sum(state(base, t)["state"] == "running" for t in task_ids) == 2, 20, "two tasks running")
    worker.send(signal.SIGTERM)
    assert_clean_exit(worker, timeout=15)  # 1 s grace, then the two runs are re-queued
    assert {state(base, t)["state"] for t in task_ids} == {"queued"}


def test_shutdown_cancellations_do_not_burn_retries(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    q = queue()
    _, base = spawn_api(RELAY_QUEUE_NAME=q)
    env = {"RELAY_QUEUE_NAME": q, "RELAY_MAX_TRIES": "2", "RELAY_WORKER_GRACE_SECONDS": "0"}
    task_id = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 2, "steps": 2}})
    for _ in range(3):  # three deploys interrupt it: more than max_tries pickups
        worker = spawn_worker(**env)
        wait_state(base, task_id, {"running"})
        worker.send(signal.SIGTERM)
        assert_clean_exit(worker)
        assert state(base, task_id)["state"] == "queued"
    spawn_worker(**env)
    final = wait_state(base, task_id, {"succeeded", "failed"}, timeout=30)
    assert final["state"] == "succeeded", final
    assert types(read_events(base, task_id)).count("requeued") == 3


def test_worker_sigint_exits_cleanly(spawn_worker: StartWorker) -> None:
    worker = spawn_worker(RELAY_QUEUE_NAME=queue())
    worker.send(signal.SIGINT)
    assert_clean_exit(worker)


def test_api_sigint_exits_cleanly(spawn_api: StartApi) -> None:
    api, _ = spawn_api()
    api.send(signal.SIGINT)
    assert_clean_exit(api)


def test_api_sigterm_mid_stream_finishes_or_hands_over(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    q = queue()
    api, base = spawn_api(RELAY_QUEUE_NAME=q, RELAY_API_DRAIN_SECONDS="3")
    _, other_base = spawn_api(RELAY_QUEUE_NAME=q)
    spawn_worker(RELAY_QUEUE_NAME=q)
    long_id = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 8, "steps": 8}})
    short_id = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 1, "steps": 2}})
    wait_state(base, long_id, {"running"})
    with (
        httpx.stream("GET", f"{base}/tasks/{long_id}/events", timeout=30) as long_stream,
        httpx.stream("GET", f"{base}/tasks/{short_id}/events", timeout=30) as short_stream,
    ):
        api.send(signal.SIGTERM)
        wait_until(lambda: submit(base, {"task": "echo"}).status_code == 503, 3, "submits to be refused")
        refused = submit(base, {"task": "echo"})
        assert refused.json()["error"]["code"] == "draining"
        assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 503
        short_events = [e for e in ndjson_lines(short_stream) if e["type"] != "heartbeat"]
        long_events = [e for e in ndjson_lines(long_stream) if e["type"] != "heartbeat"]
    assert short_events[-1]["type"] == "end"  # its task ended inside the drain period
    hint = long_events[-1]
    assert hint["type"] == "reconnect"
    assert hint["data"]["last_seq"] == long_events[-2]["seq"]
    assert_clean_exit(api)
    # The client follows the hint on another API process and misses nothing.
    rest = read_events(other_base, long_id, after=hint["data"]["last_seq"])
    seqs = [e["seq"] for e in long_events[:-1] + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1]["type"] == "end"
