"""WAIT for replicas, on the connection that enqueued (the enqueue batch's own pipeline), against a real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from shared import keys
from shared.durability import NotReplicated
from shared.enqueue import Enqueuer, prepare
from shared.redis import api_client
from shared.settings import Settings
from shared.tasks import TaskSubmission
from tests.support.workflows import submit_chain
from worker.tasks import load


async def test_a_submit_no_replica_confirmed_is_refused_but_kept(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, queue_name=f"relay:wait:{uuid.uuid4().hex[:8]}",
                        redis_wait_replicas=1, redis_wait_timeout_ms=100)  # fmt: skip
    spec = load(["worker.tasks.demo"]).get("echo")
    pool = api_client(settings)
    admin = redis.Redis.from_url(redis_url)
    try:
        enqueuer = Enqueuer(pool, settings)
        task_id = f"w-{uuid.uuid4().hex[:8]}"
        with pytest.raises(NotReplicated) as caught:  # the suite's Redis has no replica
            await enqueuer.enqueue(prepare(spec, settings, TaskSubmission(task="echo", id=task_id)))
        assert (caught.value.task_id, caught.value.confirmed, caught.value.wanted) == (task_id, 0, 1)
        assert admin.exists(keys.job(task_id))  # still on the primary: it will probably run
        record = admin.get(keys.job(task_id))
        with pytest.raises(NotReplicated):  # a resubmit is refused too while no replica has the job ...
            await enqueuer.enqueue(prepare(spec, settings, TaskSubmission(task="echo", id=task_id)))
        assert admin.get(keys.job(task_id)) == record  # ... and is safe: nothing new was written
    finally:
        admin.close()
        await pool.aclose()


async def test_a_workflow_submit_no_replica_confirmed_is_refused_but_kept(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, queue_name=f"relay:wait:{uuid.uuid4().hex[:8]}",
                        redis_wait_replicas=1, redis_wait_timeout_ms=100)  # fmt: skip
    pool = api_client(settings)
    admin = redis.Redis.from_url(redis_url)
    try:
        flow_id = f"f-{uuid.uuid4().hex[:8]}"
        with pytest.raises(NotReplicated, match=r"^workflow ") as caught:  # the suite's Redis has no replica
            await submit_chain(pool, settings, flow_id)
        assert (caught.value.task_id, caught.value.confirmed, caught.value.wanted) == (flow_id, 0, 1)
        assert admin.exists(keys.flow(flow_id))  # stored, its first step enqueued: it will probably run
        stored = admin.hgetall(keys.flow(flow_id))
        with pytest.raises(NotReplicated):  # a resubmit is refused too while no replica has it ...
            await submit_chain(pool, settings, flow_id)
        assert admin.hgetall(keys.flow(flow_id)) == stored  # ... and is safe: nothing new was written
    finally:
        admin.close()
        await pool.aclose()


async def test_without_the_setting_nothing_waits(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, queue_name=f"relay:wait:{uuid.uuid4().hex[:8]}")
    spec = load(["worker.tasks.demo"]).get("echo")
    pool = api_client(settings)
    try:
        submitted = await Enqueuer(pool, settings).enqueue(prepare(spec, settings, TaskSubmission(task="echo")))
        assert submitted.created
    finally:
        await pool.aclose()
