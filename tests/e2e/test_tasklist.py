"""``GET /tasks``: newest first, filtered by state and task name, paged by cursor, from a bounded index."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
import redis
from arq.connections import ArqRedis

from bench.harness.processes import wait_until
from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.redis import worker_client
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasks import TaskSubmission
from shared.transitions import Transitions
from tests.conftest import StartApi, StartWorker
from worker.tasks import load

TASKS = 10_000
ABORTED_EVERY = 10


async def _fill(redis_url: str, queue: str, cluster: bool) -> list[str]:
    """10,000 deferred tasks (echo, and every fifth one ``sleep``), every tenth then aborted; oldest first."""
    settings = Settings(redis_url=redis_url, queue_name=queue, max_queue_depth=TASKS + 1, redis_cluster=cluster)
    registry = load(["worker.tasks.demo"])
    pool = worker_client(settings) if cluster else ArqRedis.from_url(redis_url)
    try:
        enqueuer = Enqueuer(pool, settings)
        ids = [f"list-{i:05d}-{uuid.uuid4().hex[:6]}" for i in range(TASKS)]
        for start in range(0, TASKS, 500):  # concurrent submits share script calls, as in an API process
            batch = []
            for i in range(start, start + 500):
                task = "sleep" if i % 5 == 0 else "echo"
                submission = TaskSubmission(task=task, id=ids[i], delay_seconds=3600)
                batch.append(prepare(registry.get(task), settings, submission))
            await asyncio.gather(*(enqueuer.enqueue(p) for p in batch))
        transitions = Transitions(pool, Scripts(pool), settings)
        await asyncio.gather(*(transitions.abort(t) for t in ids[::ABORTED_EVERY]))
        return ids
    finally:
        await pool.aclose()


def _all_pages(base: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    tasks: list[dict[str, Any]] = []
    pages = 0
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = httpx.get(f"{base}/tasks", params=query, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        tasks += body["tasks"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return tasks, pages


@pytest.fixture(scope="module", params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def list_on(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where the listed tasks are: the session's Redis, then a Redis Cluster (``spawn_api`` arguments)."""
    if request.param == "redis":
        return {"url": str(request.getfixturevalue("redis_url"))}
    return {"url": str(request.getfixturevalue("redis_cluster_url")), "RELAY_REDIS_CLUSTER": "true"}


@pytest.fixture(scope="module")
def filled(list_on: dict[str, str]) -> tuple[str, list[str]]:
    queue = f"relay:list:{uuid.uuid4().hex[:8]}"
    cluster = "RELAY_REDIS_CLUSTER" in list_on
    with keys.layout(queue, cluster):  # its cluster client would take the layout of its namespace for good
        return queue, asyncio.run(_fill(list_on["url"], queue, cluster))


@pytest.fixture
def api(filled: tuple[str, list[str]], list_on: dict[str, str], spawn_api: StartApi) -> str:
    _, base = spawn_api(RELAY_QUEUE_NAME=filled[0], **list_on)
    return base


def test_pages_through_ten_thousand_tasks_newest_first(api: str, filled: tuple[str, list[str]]) -> None:
    _, ids = filled
    tasks, pages = _all_pages(api, limit=500)
    assert [t["id"] for t in tasks] == ids[::-1]  # every task once, newest first, none skipped across pages
    assert pages == TASKS // 500
    assert {t["state"] for t in tasks} == {"deferred", "aborted"}


def test_filters_by_state_and_by_task(api: str, filled: tuple[str, list[str]]) -> None:
    _, ids = filled
    aborted, _ = _all_pages(api, state="aborted", limit=200)
    assert [t["id"] for t in aborted] == ids[::ABORTED_EVERY][::-1]
    sleeps, _ = _all_pages(api, task="sleep", state="deferred", limit=500)
    expected = [t for i, t in enumerate(ids) if i % 5 == 0 and i % ABORTED_EVERY != 0]
    assert [t["id"] for t in sleeps] == expected[::-1]
    assert all(t["task"] == "sleep" and t["state"] == "deferred" for t in sleeps)


def test_a_page_is_a_full_task_view(api: str) -> None:
    first = httpx.get(f"{api}/tasks", params={"limit": 1, "state": "aborted"}, timeout=10).json()["tasks"][0]
    assert first["error"] == {"error_type": "Aborted", "message": "aborted before it started"}
    assert first["links"] == {"self": f"/tasks/{first['id']}", "events": f"/tasks/{first['id']}/events"}


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"state": "done"}, {"task": "bad name"}, {"cursor": "???"}],
)
def test_bad_parameters_are_422(api: str, params: dict[str, str]) -> None:
    response = httpx.get(f"{api}/tasks", params=params, timeout=10)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_index_memory_is_measured(filled: tuple[str, list[str]], list_on: dict[str, str]) -> None:
    queue, _ = filled
    cluster = "RELAY_REDIS_CLUSTER" in list_on
    client = redis.RedisCluster.from_url(list_on["url"]) if cluster else redis.Redis.from_url(list_on["url"])
    try:
        with keys.layout(queue, cluster):
            used = int(client.memory_usage(keys.task_index(queue), samples=0) or 0)
    finally:
        client.close()
    per_task = used / TASKS
    print(f"\ntask index: {used:,} bytes for {TASKS:,} tasks ({per_task:.0f} bytes per task)")
    assert per_task < 200  # an id (about 20 bytes here) and a score, in a sorted set


def test_workers_keep_the_index_bounded(redis_url: str, spawn_worker: StartWorker, redis_client: redis.Redis) -> None:
    queue = f"relay:bound:{uuid.uuid4().hex[:8]}"
    index = keys.task_index(queue)
    now = time.time_ns() // 1000
    gone = {f"gone-{i}": now + i for i in range(500)}  # tasks whose records have expired
    redis_client.zadd(index, gone)
    redis_client.zadd(index, {f"kept-{i}": now + 1000 + i for i in range(1500)})
    for i in range(1500):
        redis_client.set(keys.job(f"kept-{i}"), b"{}")
    spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_INDEX_MAX="1000")
    wait_until(lambda: redis_client.zcard(index) <= 1000, 20, "the index to be trimmed at the worker's start")
    survivors = {m.decode() for m in redis_client.zrange(index, 0, -1)}
    assert survivors == {f"kept-{i}" for i in range(500, 1500)}  # the newest 1,000; expired ones went first


def test_one_maintenance_pass_prunes_far_more_than_one_batch(
    spawn_worker: StartWorker, redis_client: redis.Redis
) -> None:
    """8,000 expired entries, oldest first (at 100 tasks/s, more die each minute than one 500-entry batch),
    with a live task every 100th among them and 1,000 newer live ones: one pass (at the worker's start) drops
    every expired entry and keeps every live one."""
    queue = f"relay:prune:{uuid.uuid4().hex[:8]}"
    index = keys.task_index(queue)
    now = time.time_ns() // 1000
    old = [f"old-{i}" for i in range(8000)]
    live = {task_id for i, task_id in enumerate(old) if i % 100 == 50} | {f"new-{i}" for i in range(1000)}
    redis_client.zadd(index, {task_id: now + i for i, task_id in enumerate(old)})
    redis_client.zadd(index, {f"new-{i}": now + 10_000 + i for i in range(1000)})
    redis_client.mset({keys.job(task_id): b"{}" for task_id in live})
    spawn_worker(RELAY_QUEUE_NAME=queue)
    wait_until(lambda: redis_client.zcard(index) <= len(live), 20, "one pass to prune the expired entries")
    assert {m.decode() for m in redis_client.zrange(index, 0, -1)} == live
