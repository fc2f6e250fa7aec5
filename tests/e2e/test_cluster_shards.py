"""One queue over three Redis Cluster slots (``RELAY_QUEUE_SHARDS=3``; issue #22), with real processes on the test
cluster: the tasks' keys spread over the three shards' slots, each task runs once and its stream ends, the API lists
and counts them all, a worker claims from every shard (a backlog in one does not starve another), and children and
workflows stay in their parent's or workflow's shard, and an API key's cap on active tasks counts every shard."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from redis.cluster import RedisCluster

from bench.harness.client import (
    ndjson_lines,
    read_events,
    read_workflow_events,
    submit,
    submit_ok,
    submit_workflow,
    types,
    wait_state,
    wait_workflow,
)
from shared import keys, tenancy
from tests.conftest import StartApi, StartWorker

pytestmark = pytest.mark.cluster

SHARDS = 3


def sharded(redis_cluster_url: str, **env: str) -> dict[str, str]:
    namespace = f"relay:sh:{uuid.uuid4().hex[:8]}"
    return {
        "url": redis_cluster_url,
        "RELAY_REDIS_CLUSTER": "true",
        "RELAY_QUEUE_NAME": namespace,
        "RELAY_QUEUE_SHARDS": str(SHARDS),
    } | env


def ids_in_shard(shard: int, count: int, prefix: str, tenant: str | None = None) -> list[str]:
    """Client-chosen ids that ``keys.shard_of`` puts in ``shard`` (stored as ``tenant``'s)."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        candidate = f"{prefix}-{i}"
        if keys.shard_of(tenancy.stored_id(tenant, candidate), SHARDS) == shard:
            found.append(candidate)
        i += 1
    return found


def test_tasks_spread_over_the_shards_run_once_stream_list_and_count(
    redis_cluster_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = sharded(redis_cluster_url)
    namespace = env["RELAY_QUEUE_NAME"]
    _, base = spawn_api(**env)
    spawn_worker(**env)
    ids = [submit_ok(base, {"task": "echo", "args": [f"m{i}"]}) for i in range(60)]
    # Streamed back on the submit's own response: through the inbox of each task's shard.
    streamed: list[str] = []
    for i in range(6):
        headers = {"Accept": "application/x-ndjson"}
        with httpx.stream("POST", f"{base}/tasks", json={"task": "echo"}, headers=headers, timeout=30) as response:
            assert response.status_code == 200, response.read()
            events = [e for e in ndjson_lines(response) if e["type"] != "heartbeat"]
        assert types(events)[-1] == "end", (i, events)
        assert events[-1]["data"]["state"] == "succeeded", (i, events)
        streamed.append(events[0]["task_id"])
    for task_id in ids:
        events = read_events(base, task_id)
        assert types(events).count("started") == 1, (task_id, types(events))  # ran once
        assert events[-1]["type"] == "end", events[-1]
        assert events[-1]["data"]["state"] == "succeeded", events[-1]
    everyone = {*ids, *streamed}
    shards = Counter(keys.shard_of(task_id, SHARDS) for task_id in everyone)
    assert set(shards) == {0, 1, 2}, shards

    # Each task's keys are in its shard's slot, and the three shards are three slots.
    client = RedisCluster.from_url(redis_cluster_url)
    try:
        tag_slots = [int(client.cluster_keyslot("{relay:" + namespace + ":" + str(s) + "}")) for s in range(SHARDS)]
        assert len(set(tag_slots)) == SHARDS, tag_slots
        with keys.layout(namespace, cluster=True, shards=SHARDS):
            for task_id in everyone:
                shard = keys.shard_of(task_id)
                with keys.on_shard(shard):
                    result = keys.result(task_id)
                assert client.exists(result), result
                assert int(client.cluster_keyslot(result)) == tag_slots[shard]
            for shard in range(SHARDS):  # the worker's first poll ran the minute's maintenance on every shard
                with keys.on_shard(shard):
                    assert client.get(keys.maintenance_lock(namespace)) is not None, shard
        nodes = {client.get_node_from_key("{relay:" + namespace + ":" + str(s) + "}").name for s in range(SHARDS)}
        print(f"shard slots {tag_slots} on nodes {sorted(nodes)}; tasks per shard {dict(shards)}")
    finally:
        client.close()

    # The list merges every shard's index, newest first, a page at a time, each task once.
    listed: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 25} | ({"cursor": cursor} if cursor else {})
        page = httpx.get(f"{base}/tasks", params=params, timeout=10).json()
        listed += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(t["id"] for t in listed) == sorted(everyone)
    submitted_at = [t["enqueued_at"] for t in listed]
    assert submitted_at == sorted(submitted_at, reverse=True)
    stats = httpx.get(f"{base}/stats", timeout=10).json()
    assert stats["queue"] | {"name": None} == {"name": None, "due": 0, "deferred": 0, "running": 0}
    assert [w["status"] for w in stats["workers"]] == ["alive"]


def test_a_backlog_in_one_shard_does_not_starve_another(
    redis_cluster_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = sharded(redis_cluster_url, RELAY_WORKER_CONCURRENCY="1")
    _, base = spawn_api(**env)
    spawn_worker(**env)
    backlog = ids_in_shard(0, 12, "backlog")
    for task_id in backlog:
        submit_ok(base, {"id": task_id, "task": "sleep", "args": [0.3, 1]})
    wait_state(base, backlog[0], {"running", "succeeded"})
    others = [ids_in_shard(shard, 1, f"other{shard}")[0] for shard in (1, 2)]
    for task_id in others:
        submit_ok(base, {"id": task_id, "task": "echo"})
    for task_id in others:
        assert wait_state(base, task_id, {"succeeded"}, timeout=30)["state"] == "succeeded"
    still_waiting = [t for t in backlog if httpx.get(f"{base}/tasks/{t}", timeout=10).json()["state"] == "queued"]
    # One slot, 12 tasks of 0.3 s in shard 0: the other shards' tasks ran within a few claims, long before it drained.
    assert len(still_waiting) >= 6, still_waiting
    for task_id in backlog:
        assert wait_state(base, task_id, {"succeeded"}, timeout=30)["state"] == "succeeded"


def test_children_and_workflows_stay_in_their_shard(
    redis_cluster_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = sharded(redis_cluster_url)
    _, base = spawn_api(**env)
    spawn_worker(**env)
    parents = [submit_ok(base, {"task": "parent_of", "args": [3, "inc"]}) for _ in range(6)]
    assert {keys.shard_of(p, SHARDS) for p in parents} != {0}, "all parents in one shard: try more"
    for parent in parents:
        view = wait_state(base, parent, {"succeeded", "failed"}, timeout=30)
        assert view["result"] == [1, 2, 3], view
        children = [f"{parent}.{i}" for i in (1, 2, 3)]
        assert {keys.shard_of(c, SHARDS) for c in children} == {keys.shard_of(parent, SHARDS)}
        assert all(httpx.get(f"{base}/tasks/{c}", timeout=10).json()["state"] == "succeeded" for c in children)
    step = {"task": "inc", "args": [0]}
    flows = [submit_workflow(base, {"chain": [step, {"task": "inc"}, {"task": "inc"}]}) for _ in range(6)]
    for flow in flows:
        assert wait_workflow(base, flow)["result"] == 3
    listed = httpx.get(f"{base}/workflows", params={"limit": 50}, timeout=10).json()["workflows"]
    assert {w["id"] for w in listed} == set(flows)
    for flow in flows:  # each workflow's own stream, in its shard
        events = read_workflow_events(base, flow)
        assert events[-1]["type"] == "workflow_end", events[-1]
        assert [e["type"] for e in events].count("step_ended") == 3
    # A manual retry runs a task again in its shard: its second try's events continue its stream.
    failing = [ids_in_shard(shard, 1, f"fails{shard}")[0] for shard in range(SHARDS)]
    for task_id in failing:
        submit_ok(base, {"id": task_id, "task": "fail"})
        wait_state(base, task_id, {"failed"})
        assert httpx.post(f"{base}/tasks/{task_id}/retry", timeout=10).status_code == 202
    for task_id in failing:
        events = read_events(base, task_id)
        assert types(events).count("started") == 2, types(events)
        assert types(events).count("end") == 2, types(events)
    # Aborting a parent in another shard reaches its children there.
    parent = submit_ok(base, {"task": "fans_out", "args": [2, 1, 60.0, True]})
    deadline = time.monotonic() + 20
    while httpx.get(f"{base}/tasks/{parent}.2", timeout=10).json().get("state") != "running":
        assert time.monotonic() < deadline, "the children never started"
        time.sleep(0.05)
    answer = httpx.delete(f"{base}/tasks/{parent}", timeout=10).json()
    assert answer["children"] == 2, answer
    for task_id in (parent, f"{parent}.1", f"{parent}.2"):
        assert wait_state(base, task_id, {"aborted"}, timeout=30)["state"] == "aborted"


def test_leases_are_renewed_in_every_shard(
    redis_cluster_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # A 1 s lease (not the default 10 s) so that tasks of 2.5 s outlive it twice: each shard's renewal must keep its
    # task, or another claim sweeps it and it starts again.
    env = sharded(redis_cluster_url, RELAY_LEASE_SECONDS="1")
    _, base = spawn_api(**env)
    spawn_worker(**env)
    spawn_worker(**env)  # a second worker that would take over any lapsed lease
    ids = [ids_in_shard(shard, 1, f"long{shard}")[0] for shard in range(SHARDS)]
    for task_id in ids:
        submit_ok(base, {"id": task_id, "task": "sleep", "args": [2.5, 5]})
    for task_id in ids:
        events = read_events(base, task_id)
        assert types(events).count("started") == 1, (task_id, types(events))
        assert events[-1]["data"]["state"] == "succeeded", events[-1]


def test_a_killed_workers_tasks_in_every_shard_are_taken_over(
    redis_cluster_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # A 2 s lease (not the default 10 s) so the take-over comes soon; the survivor is at production defaults, so it
    # finds the lapsed leases by its own polls of each shard (no wake-up notice announces a lapse).
    env = sharded(redis_cluster_url, RELAY_LEASE_SECONDS="2")
    _, base = spawn_api(**env)
    victim = spawn_worker(**env)
    ids = [ids_in_shard(shard, 1, f"crash{shard}")[0] for shard in range(SHARDS)]
    for task_id in ids:
        submit_ok(base, {"id": task_id, "task": "sleep", "args": [3, 3]})
    for task_id in ids:
        wait_state(base, task_id, {"running"})
    victim.send(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    spawn_worker(**env)
    for task_id in ids:
        view = wait_state(base, task_id, {"succeeded", "failed", "aborted"}, timeout=60)
        assert (view["state"], view["tries"]) == ("succeeded", 2), view  # run again once, in its own shard


ALICE = {"X-API-Key": "alice-secret-key-1"}
BOB = {"X-API-Key": "bob-secret-key-2"}
API_KEYS = "alice:alice-secret-key-1,bob:bob-secret-key-2"
DEFERRED = {"task": "echo", "delay_seconds": 600}


def test_key_max_active_counts_the_tasks_of_every_shard(
    redis_cluster_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """RELAY_KEY_MAX_ACTIVE with three shards: the key's tasks in any shard count against one cap (kept in shard 0),
    concurrent submits through two API processes pass it no more often than it allows, a refusal is the one a
    single Redis gives, and a task that ended in another shard frees its slot."""
    env = sharded(redis_cluster_url, RELAY_API_KEYS=API_KEYS, RELAY_KEY_MAX_ACTIVE="2")
    namespace = env["RELAY_QUEUE_NAME"]
    _, first = spawn_api(**env)
    _, second = spawn_api(**env)
    spawn_worker(**env)  # offers the task (its catalogue); the tasks here are deferred, it runs none

    # Concurrent submits, two ids in each shard, alternating between the processes: one atomic check each.
    burst_ids = [task_id for shard in range(SHARDS) for task_id in ids_in_shard(shard, 2, f"burst{shard}", "bob")]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10, headers=BOB) as client:
            bases = [first, second]
            posts = (client.post(f"{bases[i % 2]}/tasks", json=DEFERRED | {"id": t}) for i, t in enumerate(burst_ids))
            return list(await asyncio.gather(*posts))

    responses = asyncio.run(burst())
    assert sorted(r.status_code for r in responses) == [202] * 2 + [429] * 4, [r.text for r in responses]

    # Two tasks in two other shards than the third's: the third is refused, with the error a single Redis gives.
    one, two, three = (ids_in_shard(shard, 1, f"cap{shard}", "alice")[0] for shard in (1, 2, 0))
    assert submit(first, DEFERRED | {"id": one}, headers=ALICE).status_code == 202
    assert submit(second, DEFERRED | {"id": two}, headers=ALICE).status_code == 202
    refused = submit(first, DEFERRED | {"id": three}, headers=ALICE)
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "5"
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["message"] == (
        "API key 'alice' has 2 tasks queued or running, its maximum (RELAY_KEY_MAX_ACTIVE); retry when some have ended"
    )

    # The key's set is in shard 0's slot and holds the two tasks of shards 1 and 2.
    client = RedisCluster.from_url(redis_cluster_url)
    try:
        with keys.layout(namespace, cluster=True, shards=SHARDS), keys.on_shard(0):
            reserved = {m.decode() for m in client.zrange(keys.quota_active(namespace, "alice"), 0, -1)}
            assert client.keyslot(keys.quota_active(namespace, "alice")) == client.keyslot(keys.schedule(namespace))
    finally:
        client.close()
    assert reserved == {tenancy.stored_id("alice", one), tenancy.stored_id("alice", two)}  # API keys are tenants

    # A task that ended in shard 1 (aborted while it waited) frees its slot, through either process.
    assert httpx.delete(f"{first}/tasks/{one}", headers=ALICE, timeout=10).status_code == 200
    assert submit(second, DEFERRED | {"id": three}, headers=ALICE).status_code == 202
    assert submit(first, DEFERRED | {"id": ids_in_shard(1, 2, "cap1", "alice")[1]}, headers=ALICE).status_code == 429
    assert submit(first, DEFERRED, headers=BOB).status_code == 429  # bob's cap is his own, and full

    # /metrics counts each key's active tasks the same way: one ended in shard 2 no longer counts.
    assert httpx.delete(f"{second}/tasks/{two}", headers=ALICE, timeout=10).status_code == 200
    metrics = httpx.get(f"{first}/metrics", timeout=10).text
    assert 'relay_key_active_tasks{key="alice"} 1.0' in metrics
