"""Periodic tasks: each schedule point is an ordinary task (id, events, a place in GET /tasks) and runs once
however many workers run."""

from __future__ import annotations

import itertools
import uuid

import httpx

from tests.conftest import StartApi, StartWorker
from tests.support.client import read_events, types
from tests.support.processes import wait_until

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
