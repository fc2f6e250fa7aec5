"""Runs once, on any clock, through any stall (issue #19).

- Leases are on Redis's clock: two workers whose wall clocks are 11 s ahead and 11 s behind (libfaketime, wall
  clock only) never take over each other's healthy jobs. Before, each claim compared leases with its own
  ``time.time()``: the worker ahead took over every job of the other, which ran them a second time.
- A claim sent again after a Redis stall longer than the worker's Redis timeout returns the jobs its first run
  claimed: before, the replay claimed a second batch and the first sat orphaned until its lease lapsed, then ran
  again with a try spent.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bench.harness.client import read_events, submit_ok, types, wait_state
from tests.conftest import StartApi, StartWorker

FAKETIME_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")  # Debian's libfaketime
FINAL = {"succeeded", "failed", "aborted"}


def skewed(offset: str) -> dict[str, str]:
    """Environment that moves a process's wall clock by ``offset`` (e.g. '+11s'); its monotonic clock is real."""
    return {"LD_PRELOAD": str(FAKETIME_LIBRARY), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def assert_ran_once(base: str, task_ids: list[str], timeout: float) -> None:
    finals = [wait_state(base, task_id, FINAL, timeout=timeout) for task_id in task_ids]
    assert [(f["state"], f["tries"]) for f in finals] == [("succeeded", 1)] * len(task_ids)
    for task_id in task_ids:
        kinds = types(read_events(base, task_id))
        assert kinds.count("started") == 1, kinds
        assert "requeued" not in kinds


@pytest.mark.skipif(not FAKETIME_LIBRARY.exists(), reason="libfaketime is not installed (scripts/test installs it)")
def test_workers_whose_clocks_disagree_never_take_over_healthy_jobs(
    spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    queue = f"relay:clocks:{uuid.uuid4().hex[:8]}"
    # A 2 s lease (the shortest whole lease that keeps renewals, every third of it, clear of a loaded machine's
    # pauses) against clocks 11 s apart each way: with leases on a worker's clock, every claim of the worker
    # ahead would see the other's leases as long lapsed.
    env = {"RELAY_QUEUE_NAME": queue, "RELAY_LEASE_SECONDS": "2"}
    _, base = spawn_api(**env)
    spawn_worker(**env, **skewed("+11s"))
    spawn_worker(**env, **skewed("-11s"))
    # Tasks that outlast many leases, more than one worker's slots: both workers run some at once. (They also
    # outlast the skew: with due times on each worker's clock, the worker behind saw no job due until 11 s after
    # its submit, and took the ones left then.)
    task_ids = [submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 13, "steps": 13}}) for _ in range(20)]
    assert_ran_once(base, task_ids, timeout=60)


def test_a_claim_replayed_after_a_redis_stall_claims_nothing_more(
    spawn_redis: Any, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, url = spawn_redis("--enable-debug-command", "yes")
    queue = f"relay:replay:{uuid.uuid4().hex[:8]}"
    env = {"RELAY_QUEUE_NAME": queue, "RELAY_WORKER_CONCURRENCY": "5"}
    _, base = spawn_api(url=url, **env)
    # The worker's Redis timeout (0.5 s) is shorter than the stall (2 s): its claim times out and redis-py sends
    # it again on a new connection, while Redis still runs the first one once the stall ends.
    # At the production poll delay: the worker sleeps until the jobs' due time, which the enqueue's notice told it.
    spawn_worker(url=url, RELAY_REDIS_TIMEOUT_SECONDS="0.5", RELAY_POLL_DELAY_SECONDS="2", **env)
    # Fifteen jobs due at one moment (three batches of the worker's five slots); a stall from just before it until
    # well after, so the worker's claim at that moment meets it, times out and is sent again.
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    stall_at = time.monotonic() + 2.6
    with httpx.Client(base_url=base, timeout=10) as client:
        body = {"task": "echo", "run_at": due.isoformat()}
        task_ids = [client.post("/tasks", json=body).json()["id"] for _ in range(15)]
    stall = threading.Thread(target=_stall_redis, args=(url, stall_at, 2.0))
    stall.start()
    # Read the outcome once the stall is over: during it the API rightly answers 503 to a status read.
    stall.join()
    assert_ran_once(base, task_ids, timeout=40)


def _stall_redis(url: str, at_monotonic: float, seconds: float) -> None:
    time.sleep(max(0.0, at_monotonic - time.monotonic()))  # waiting for a moment, not for an event
    client = redis.Redis.from_url(url, socket_timeout=seconds + 10)
    try:
        client.execute_command("DEBUG", "SLEEP", seconds)
    finally:
        client.close()


@pytest.mark.skipif(not FAKETIME_LIBRARY.exists(), reason="libfaketime is not installed (scripts/test installs it)")
def test_a_worker_whose_clock_is_behind_still_counts_as_live(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    """Presence is stamped and read on Redis's clock: a worker 40 s behind (beyond the 30 s after which an offer is
    stale) still offers its tasks, so the API accepts them; before, every submit got 422 'no worker is running'."""
    queue = f"relay:late:{uuid.uuid4().hex[:8]}"
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    spawn_worker(RELAY_QUEUE_NAME=queue, **skewed("-40s"))
    task_id = submit_ok(base, {"task": "echo"})
    assert wait_state(base, task_id, FINAL)["state"] == "succeeded"
    workers = httpx.get(f"{base}/stats", timeout=10).json()["workers"]
    assert [w["status"] for w in workers] == ["alive"]
    assert workers[0]["seen_seconds_ago"] < 10
