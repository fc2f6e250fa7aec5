"""Workers claim only the tasks they run (issue #19): workers with different task modules share a queue, a
rolling deploy adds a task worker by worker, and a job no live worker runs waits, saying so, until one starts.

Before per-task lanes (``shared/keys.py``) a worker claimed whatever was due and failed a job it had no code for
with ``NotRunnable``, for good: half of a project's tasks failed next to ``scripts/dev``'s demo worker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.harness.client import read_events, submit_ok, types, wait_state
from bench.harness.processes import wait_until
from shared import presence
from shared.catalogue import STALE_SECONDS
from tests.conftest import StartApi, StartWorker
from tests.e2e.test_own_tasks import make_project

FINAL = {"succeeded", "failed", "aborted"}
DEMO = "worker.tasks.demo"
OWN = "acme_tasks.imaging"


class Session:
    """One keep-alive HTTP client for the hundreds of submits and reads here (a client per request costs a TLS
    context and a connection each, and made these tests slow on a loaded machine)."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=10)

    def submit(self, body: dict[str, Any]) -> str:
        response = self.client.post("/tasks", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def finals(self, ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
        """Each task's view once it has ended (polled with a deadline)."""
        deadline = time.monotonic() + timeout
        views: list[dict[str, Any]] = []
        for task_id in ids:
            while True:
                view = self.client.get(f"/tasks/{task_id}").json()
                if view.get("state") in FINAL:
                    views.append(view)
                    break
                assert time.monotonic() < deadline, f"task {task_id} never ended: {view}"
                time.sleep(0.05)
        return views


def assert_each_ran_once(views: list[dict[str, Any]]) -> None:
    failed = [(v["id"], v["error"]) for v in views if v["state"] != "succeeded"]
    assert failed == []
    assert {v["tries"] for v in views} == {1}


def test_workers_with_different_task_modules_on_one_queue_each_run_only_their_own(
    tmp_path: Path, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """The README's recipe next to scripts/dev: the demo worker and a project's worker on the default queue."""
    project = make_project(tmp_path)
    queue = f"relay:mixed:{uuid.uuid4().hex[:8]}"
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES=DEMO)
    spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES=OWN, PYTHONPATH=str(project))
    wait_until(lambda: submit_offers(base) >= {"echo", "acme_resize"}, timeout=20, what="both workers' offers")
    session = Session(base)
    ids = []
    for i in range(200):
        ids.append(session.submit({"task": "echo", "kwargs": {"message": f"m{i}"}}))
        ids.append(session.submit({"task": "acme_resize", "kwargs": {"url": f"u{i}"}}))
    assert_each_ran_once(session.finals(ids))


def test_a_rolling_deploy_that_adds_a_task_fails_none_for_lack_of_code(
    tmp_path: Path, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """Old workers (demo tasks) are replaced one by one by new ones (demo + the project's task) under load: once
    a new worker offers the new task, the old ones never take its jobs."""
    project = make_project(tmp_path)
    queue = f"relay:deploy:{uuid.uuid4().hex[:8]}"
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    old = [spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES=DEMO) for _ in range(2)]
    new_env = {"RELAY_QUEUE_NAME": queue, "RELAY_TASK_MODULES": f"{DEMO},{OWN}", "PYTHONPATH": str(project)}
    session = Session(base)
    ids = [session.submit({"task": "echo"}) for _ in range(50)]
    for replaced in old:
        spawn_worker(**new_env)
        wait_until(lambda: "acme_resize" in submit_offers(base), timeout=20, what="the new worker's offer")
        for i in range(100):
            ids.append(session.submit({"task": "acme_resize", "kwargs": {"url": f"u{i}"}}))
            ids.append(session.submit({"task": "echo"}))
        replaced.stop()
    assert_each_ran_once(session.finals(ids))


def age_the_record_of(client: redis.Redis, queue: str, pid: int, seconds: float) -> None:
    """Move the presence record of the worker with ``pid`` back ``seconds`` on Redis's clock."""
    key = presence.presence_key(queue)
    for field, raw in client.hgetall(key).items():
        record = json.loads(raw)
        if record["pid"] == pid:
            record["seen_ms"] -= int(seconds * 1000)
            client.hset(key, field, json.dumps(record))
            return
    raise AssertionError(f"no presence record of worker {pid}")


def test_a_job_no_live_worker_runs_waits_saying_so_and_runs_when_one_starts(
    tmp_path: Path, spawn_api: StartApi, spawn_worker: StartWorker, redis_client: redis.Redis
) -> None:
    project = make_project(tmp_path)
    queue = f"relay:waits:{uuid.uuid4().hex[:8]}"
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES=DEMO)
    own = spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES=OWN, PYTHONPATH=str(project))
    wait_until(lambda: "acme_resize" in submit_offers(base), timeout=20, what="the project worker's offer")
    task_id = submit_ok(base, {"task": "acme_resize", "kwargs": {"url": "u"}, "delay_seconds": 2})
    own_pid = own.pid
    own.stop()  # its worker leaves before the job falls due; the demo worker stays
    # A worker that stopped still offers its tasks for STALE_SECONDS (30 s, shared.catalogue) after its last record,
    # so that a rolling deploy's short gap refuses no submit. Its record is aged by that much here, as 30 s of
    # waiting would (the staleness itself is tested in tests/shared/test_catalogue.py).
    age_the_record_of(redis_client, queue, own_pid, STALE_SECONDS + 1)

    seen: dict[str, Any] = {}

    def waiting() -> bool:
        seen.update(httpx.get(f"{base}/tasks/{task_id}", timeout=10).json())
        return seen["state"] == "queued" and seen["waiting_reason"] is not None

    wait_until(waiting, timeout=30, what="the job to wait for a worker that runs its task")
    view = dict(seen)
    assert view["waiting_reason"] == "waiting for a worker that runs 'acme_resize'"
    assert view["tries"] == 0  # the demo worker never took it
    stats = httpx.get(f"{base}/stats", timeout=10).json()
    assert {"task": "acme_resize", "due": 1, "deferred": 0, "waiting_reason": view["waiting_reason"]} in stats["tasks"]

    spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES=OWN, PYTHONPATH=str(project))
    assert wait_state(base, task_id, FINAL, timeout=30)["state"] == "succeeded"
    assert types(read_events(base, task_id))[0] == "started"


def submit_offers(base: str) -> set[str]:
    """The task names the API accepts now (its OpenAPI document lists the live workers' offers)."""
    document = httpx.get(f"{base}/openapi.json", timeout=10).json()
    return set(document.get("x-relay-tasks", {}))
