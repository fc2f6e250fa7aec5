"""Periodic tasks: each schedule point is an ordinary task (id, events, a place in GET /tasks) and runs once
however many workers run."""

from __future__ import annotations

import itertools
import time
import uuid

import httpx

from bench.harness.client import read_events, submit, types, wait_state
from bench.harness.processes import wait_until
from tests.conftest import StartApi, StartWorker

TICKS = 4


def test_three_workers_run_each_point_of_a_schedule_once(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    queue = f"relay:cron:{uuid.uuid4().hex[:8]}"
    env = {"RELAY_QUEUE_NAME": queue, "RELAY_TASK_MODULES": "tests.support.scheduled"}
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    workers = [spawn_worker(**env) for _ in range(3)]

    def ticks() -> list[dict[str, object]]:
        page = httpx.get(f"{base}/tasks", params={"task": "tick", "state": "succeeded", "limit": 100}, timeout=10)
        return list(page.json()["tasks"])

    wait_until(lambda: len(ticks()) >= TICKS, 30, f"{TICKS} schedule points to have run")
    for worker in workers:
        worker.stop()
    done = ticks()
    points = sorted(int(str(t["id"]).rsplit("-", 1)[1]) for t in done)
    assert len(points) == len(set(points))  # one task per point
    assert all(b - a == 1000 for a, b in itertools.pairwise(points))  # every second, none skipped
    for task in done:
        events = read_events(base, str(task["id"]))
        assert types(events) == ["started", "result", "end"]  # run once, by one of the three
        assert events[-2]["data"] == {"id": task["id"], "note": "every second"}


def _ticks_taken(base: str) -> bool:
    """Whether the API takes ``tick`` (once it sees the offer of a worker that loads it)."""
    return submit(base, {"task": "tick", "kwargs": {"note": "probe"}}).status_code == 202


def test_a_point_whose_id_is_taken_is_skipped_with_a_warning(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    # Anyone may submit the predictable id of a coming point with other arguments; that must not end the worker
    # (every restart would meet the same point again).
    queue = f"relay:cron:{uuid.uuid4().hex[:8]}"
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    worker = spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES="tests.support.scheduled")
    wait_until(lambda: _ticks_taken(base), 20, "the API to take tick")
    first_ms = (int(time.time()) + 6) * 1000  # well past the 2 s ahead of which the worker enqueues a point
    taken = [f"cron-tick-0-{first_ms + i * 1000}" for i in range(2)]
    for point in taken:
        response = submit(base, {"task": "tick", "id": point, "kwargs": {"note": "squatter"}})
        assert response.status_code == 202, response.text
    after = f"cron-tick-0-{first_ms + 2000}"
    wait_state(base, after, {"succeeded"}, timeout=30)  # the worker went on to the next point
    assert worker.proc.poll() is None
    output = worker.output()
    for point in taken:
        assert (
            f"WARNING relay.worker.schedules: schedule point {point} skipped: IdConflict: id '{point}' is already "
            "taken by a 'tick' task with other arguments (note)"
        ) in output
    assert "Traceback" not in output


def test_a_point_the_replicas_did_not_confirm_runs_and_the_worker_goes_on(
    spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # RELAY_REDIS_WAIT_REPLICAS=1 on a Redis without replicas: every point is on the primary, never confirmed.
    queue = f"relay:cron:{uuid.uuid4().hex[:8]}"
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    env = {"RELAY_REDIS_WAIT_REPLICAS": "1", "RELAY_REDIS_WAIT_TIMEOUT_MS": "100"}
    worker = spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES="tests.support.scheduled", **env)

    def ran() -> list[str]:
        page = httpx.get(f"{base}/tasks", params={"task": "tick", "state": "succeeded", "limit": 100}, timeout=10)
        return [str(t["id"]) for t in page.json()["tasks"]]

    wait_until(lambda: len(ran()) >= 3, 30, "3 schedule points to have run")
    assert worker.proc.poll() is None
    output = worker.output()
    for point in ran():
        assert (
            f"WARNING relay.worker.schedules: schedule point {point} enqueued but not confirmed: task {point} "
            "reached 0 of 1 replicas within 100 ms"
        ) in output
    assert "Traceback" not in output


def test_schedule_points_belong_to_the_schedule_tenant(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    queue = f"relay:cron:{uuid.uuid4().hex[:8]}"
    web, ci, ops = ({"X-API-Key": f"{name}-cron-key"} for name in ("web", "ci", "ops"))
    keys = "web:web-cron-key,ci:ci-cron-key,ops:ops-cron-key:admin"
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, RELAY_API_KEYS=keys, offers=False)
    spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES="tests.support.scheduled", RELAY_SCHEDULE_TENANT="web")

    def ticks(headers: dict[str, str]) -> list[str]:
        page = httpx.get(f"{base}/tasks", params={"task": "tick", "limit": 100}, headers=headers, timeout=10)
        assert page.status_code == 200, page.text
        return [str(t["id"]) for t in page.json()["tasks"]]

    wait_until(lambda: len(ticks(web)) >= 2, 30, "two schedule points in web's list")
    point = ticks(web)[-1]
    assert point.startswith("cron-tick-")  # web knows them by their own ids
    assert httpx.get(f"{base}/tasks/{point}", headers=web, timeout=10).json()["tenant"] == "web"
    assert ticks(ci) == []
    assert httpx.get(f"{base}/tasks/{point}", headers=ci, timeout=10).status_code == 404
    assert f"web~{point}" in ticks(ops)
