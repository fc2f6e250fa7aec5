"""A worker told to stop while its Redis is away still stops: it never waits on Redis it cannot reach.

Kubernetes terminates pods during Redis outages too. With nothing to hand back a worker exits within a few
seconds of SIGTERM; with a job it lets the job run for the grace period, tries to re-queue it, and exits,
naming the job it could not hand back (that job comes back through its lease once Redis does)."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.harness.client import read_events, submit_ok, types, wait_state
from bench.harness.processes import ManagedProcess, start_redis
from tests.conftest import StartApi, StartWorker

# Generous next to the few seconds a stop takes, far below the 30 s a patient Redis client retries for.
EXIT_WITHIN_SECONDS = 5.0
# After the grace period: the hand-back's tries (Engine.STOP_REDIS_SECONDS, 2 s), then up to 5 s for the lease
# thread, whose own renewal call may still be retrying (LeaseKeeper.stop joins it for at most 5 s).
EXIT_AFTER_GRACE_SECONDS = 2.0 + 5.0 + 2.0


def queue() -> str:
    return f"relay:test:{uuid.uuid4().hex[:10]}"


def stop_redis(proc: ManagedProcess) -> None:
    """Stop it and wait until it has exited: from then on, every connection to it is refused."""
    proc.stop()


def test_idle_worker_exits_promptly_on_sigterm_with_redis_down(
    spawn_redis: Callable[..., tuple[ManagedProcess, str]], spawn_worker: StartWorker
) -> None:
    redis_proc, url = spawn_redis()
    worker = spawn_worker(url=url, RELAY_QUEUE_NAME=queue(), RELAY_WORKER_GRACE_SECONDS="20")
    stop_redis(redis_proc)  # the signal lands while the worker's commands retry, or between its polls
    worker.send(signal.SIGTERM)
    try:
        code = worker.wait(EXIT_WITHIN_SECONDS)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {EXIT_WITHIN_SECONDS}s after SIGTERM:\n{worker.output()}") from None
    assert code == 0, worker.output()
    assert "Traceback" not in worker.output()


def test_worker_with_a_job_exits_after_the_grace_and_the_job_comes_back_by_its_lease(
    tmp_path: Path, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    redis_proc, url = start_redis(tmp_path, appendonly=True)  # its data survives a restart on the same port
    port = url.rsplit(":", 1)[1].split("/")[0]
    try:
        q, grace = queue(), 4
        _, base = spawn_api(url=url, RELAY_QUEUE_NAME=q)
        worker = spawn_worker(url=url, RELAY_QUEUE_NAME=q, RELAY_WORKER_GRACE_SECONDS=str(grace))
        # Its first try outlasts the grace period (it runs until its worker is gone); the run after the take-over
        # ends at once, so the test waits for the lease, not for a second long run.
        task_id = submit_ok(base, {"task": "hangs_first_try"})
        wait_state(base, task_id, {"running"})
        stop_redis(redis_proc)
        sent = time.monotonic()
        worker.send(signal.SIGTERM)
        code = worker.wait(grace + 40)
        took = time.monotonic() - sent
        output = worker.output()
        assert grace <= took < grace + EXIT_AFTER_GRACE_SECONDS, f"exited {took:.1f}s after SIGTERM:\n{output}"
        assert code == 0, output
        assert "Traceback" not in output
        assert f"could not hand back task {task_id}" in output, output

        redis_proc, _ = start_redis(tmp_path, port=int(port), appendonly=True)
        spawn_worker(url=url, RELAY_QUEUE_NAME=q)  # takes the job over once its lease lapses
        final = wait_state(base, task_id, {"succeeded", "failed", "aborted"}, timeout=120)
        assert final["state"] == "succeeded"
        events = types(read_events(base, task_id))
        assert events.count("started") == 2, events  # the first run's, then the run after the take-over
        assert "requeued" in events  # the take-over's re-queue (its worker was lost), not the lost hand-back
    finally:
        redis_proc.stop()
