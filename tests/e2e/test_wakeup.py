"""Idle workers pick jobs up on the enqueue notice, not on their next poll."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bench.harness.client import read_events, submit_ok, types, wait_state
from bench.harness.processes import start_redis
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


@pytest.fixture
def own_redis(log_dir: Path) -> Iterator[str]:
    """A redis-server of this test's own, so its command counts are this test's alone (set up before the workers
    and APIs that use it, so stopped after them)."""
    proc, url = start_redis(log_dir)
    try:
        yield url
    finally:
        proc.stop()


def script_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def script_calls_during(url: str, base: str, body: dict[str, Any], count: int) -> tuple[int, list[str]]:
    """The script calls Redis ran while ``count`` tasks of ``body`` were submitted one by one, and their ids."""
    client = redis.Redis.from_url(url)
    try:
        before = script_calls(client)
        ids = [submit_ok(base, body) for _ in range(count)]
        return script_calls(client) - before, ids
    finally:
        client.close()


def start_slow_polling(url: str, spawn_api: StartApi, spawn_worker: StartWorker, workers: int, **env: str) -> str:
    """An API and ``workers`` workers polling once a minute, so that what their timers run cannot blur a count of
    script calls: jobs are taken on notices, promises and freed slots. Returns the API's base URL."""
    env = {"RELAY_POLL_DELAY_SECONDS": "60", **env}
    _, base = spawn_api(url=url, **env)
    for _ in range(workers):
        spawn_worker(url=url, **env)
    return base


def running(base: str, body: dict[str, Any], count: int) -> list[str]:
    """``count`` long tasks of ``body``, submitted and running."""
    ids = [submit_ok(base, body) for _ in range(count)]
    for task_id in ids:
        wait_state(base, task_id, {"running"}, timeout=10)
    return ids


def abort_then_see_the_backlog_run(base: str, long_ids: list[str], backlog: list[str]) -> None:
    for task_id in long_ids:
        assert httpx.delete(f"{base}/tasks/{task_id}", timeout=10).status_code == 202
    for task_id in backlog:  # the freed slots take it
        wait_state(base, task_id, {"succeeded"}, timeout=30)


def test_busy_workers_do_not_claim_for_every_notice(
    own_redis: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # Each enqueue's notice reaches every worker of the queue. One with no free slot used to claim on each anyway,
    # taking nothing: with every worker busy and a backlog arriving, a claim per worker per submit.
    # One slot each, so that one long task fills a worker; the backlog is taken on the freed slots' wake-ups.
    base = start_slow_polling(own_redis, spawn_api, spawn_worker, 2, RELAY_WORKER_CONCURRENCY="1")
    long_ids = running(base, {"task": "sleep", "kwargs": {"seconds": 600, "steps": 1}}, 2)
    calls, quick = script_calls_during(own_redis, base, {"task": "echo"}, 20)
    # The 20 enqueues (fewer if some were batched), and a lease renewal or so: 20 more for every worker that
    # claimed on each notice.
    assert calls < 20 + 10
    abort_then_see_the_backlog_run(base, long_ids, quick)


def test_a_waiting_limited_job_wakes_one_idle_worker_not_all(
    own_redis: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # A job left in its lane (a limited task's: never handed off) used to be announced to every worker, and every
    # idle one claimed for it, all but one taking nothing: a claim per idle worker per submit. It is now named for
    # one registered worker (shared/keys.py "Named claims").
    base = start_slow_polling(own_redis, spawn_api, spawn_worker, 3)
    acme = {"task": "per_customer", "kwargs": {"customer_id": "acme", "seconds": 600}}
    long_ids = running(base, acme, 2)  # the limit (2 per customer) full
    calls, quick = script_calls_during(own_redis, base, {**acme, "kwargs": {"customer_id": "acme", "seconds": 0}}, 20)
    # The 20 enqueues and one claim for each (the named worker's, which finds the limit full), and a lease
    # renewal or so; a notice to all would have set off a claim per idle worker: 20 + 3 x 20.
    assert calls < 20 + 20 + 10
    abort_then_see_the_backlog_run(base, long_ids, quick)


def test_a_deferred_job_wakes_one_idle_worker_not_all(
    own_redis: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # A deferred job used to be announced to every worker ('d'), which ended every registration: each idle worker
    # claimed at once to register again. It is now named for one registered worker, which keeps the promise
    # (worker.engine.promises): with a one-minute poll the jobs can only start on time through it.
    base = start_slow_polling(own_redis, spawn_api, spawn_worker, 3)
    wait_state(base, submit_ok(base, {"task": "echo"}), {"succeeded"}, timeout=10)  # all three registered
    # Due 5 s on: the named worker's claims as the jobs fall due come after the count, even on a loaded host (due
    # in 1 s, a slow run's first jobs fell due while the last were submitted, and their claims were counted).
    calls, later = script_calls_during(own_redis, base, {"task": "echo", "delay_seconds": 5}, 20)
    # The 20 enqueues and the named worker's claim for the first (the others' lane is watched by then: shared/keys.py
    # "Watched due times"), 21 in runs here; named each, 39 or 40; a notice to all: 20 + 3 x 20.
    assert calls < 20 + 20 + 10
    for task_id in later:
        wait_state(base, task_id, {"succeeded"}, timeout=30)


def test_a_manual_retry_wakes_one_idle_worker_not_all(
    own_redis: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # A manual retry (POST /tasks/{id}/retry) puts the job back in its lane; it was announced to every worker, and
    # every idle one claimed. It is now named for one registered worker (shared/keys.py "Named claims").
    base = start_slow_polling(own_redis, spawn_api, spawn_worker, 3)
    failed = [submit_ok(base, {"task": "fail"}) for _ in range(20)]
    for task_id in failed:
        wait_state(base, task_id, {"failed"}, timeout=10)
    client = redis.Redis.from_url(own_redis)
    try:
        before = script_calls(client)
        for task_id in failed:
            assert httpx.post(f"{base}/tasks/{task_id}/retry", timeout=10).status_code == 202
            wait_state(base, task_id, {"failed"}, timeout=10)  # it ran again
        calls = script_calls(client) - before
    finally:
        client.close()
    # Per retry: retry.lua, the named worker's claim, the commit of the new try's failure, and the claim that
    # registers that worker again (82 in a run here); a notice to all set off a claim per idle worker (121).
    assert calls < 20 * 5


def test_a_deferred_job_wakes_one_worker_as_it_falls_due(
    own_redis: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # Every claim reports when the next job falls due, and every idle worker claims at the production poll (2 s):
    # each learnt the due times, and all woke for each job, one taking it and the others nothing. One worker now
    # watches the lane (shared/keys.py "Watched due times"); the others' claims leave it to that one.
    _, base = spawn_api(url=own_redis)
    for _ in range(3):
        spawn_worker(url=own_redis)  # production defaults: the herd came from the 2 s polls
    wait_state(base, submit_ok(base, {"task": "echo"}), {"succeeded"}, timeout=10)
    client = redis.Redis.from_url(own_redis)
    try:
        before = script_calls(client)
        later = [submit_ok(base, {"task": "echo", "delay_seconds": 5}) for _ in range(20)]
        for task_id in later:
            wait_state(base, task_id, {"succeeded"}, timeout=30)
        calls = script_calls(client) - before
    finally:
        client.close()
    # 20 enqueues, 20 commits, a claim as each job falls due and the three workers' polls over the 5 s or so
    # (67 or 68 in runs here); every worker claiming as each job fell due, 134 or 135.
    assert calls < 20 + 20 + 20 + 20
