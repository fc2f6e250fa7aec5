"""A claim whose reply never came does not strand the jobs it took.

arq's stop cancels its main loop as soon as no job runs, so a SIGTERM that lands while a claim is on the wire
cancels that call after Redis ran it: the jobs it took sat under this worker's leases, and ran again as a lost
worker's once those lapsed (``tries`` 2, seen in CI's rolling-deploy test). A Redis error on the reply did the
same. The engine now sends the unanswered request again (a replay returns only its batch): at stop to hand the
jobs back, or at the next poll to run them.

Here a real engine claims from a real Redis through a script call whose reply is lost on purpose."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared import keys
from shared.settings import Settings
from tests.conftest import StartApi, StartWorker
from tests.support.claims import lose_the_reply
from worker.engine.engine import Engine
from worker.tasks import load


def arq_worker() -> SimpleNamespace:
    """What ``Engine._claim`` reads and writes of arq's Worker."""
    return SimpleNamespace(max_jobs=10, tasks={}, job_counter=0, allow_pick_jobs=True)


@pytest.fixture
async def queue(spawn_api: StartApi) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A queue of its own with an API (no worker) in front of it, and a client of that API."""
    name = f"relay:lost-reply:{uuid.uuid4().hex[:8]}"
    _, base = spawn_api(RELAY_QUEUE_NAME=name)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield name, client


async def submit(client: httpx.AsyncClient) -> str:
    response = await client.post("/tasks", json={"task": "echo", "kwargs": {"message": "once"}})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def view(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Poll the async ``check`` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = await check()
        if outcome:
            return outcome
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def test_a_claim_cancelled_by_the_stop_hands_its_jobs_back_at_once(
    redis_url: str, queue: tuple[str, httpx.AsyncClient], spawn_worker: StartWorker
) -> None:
    name, client = queue
    task_id = await submit(client)
    pool = ArqRedis.from_url(redis_url)
    engine = Engine(pool, Settings(queue_name=name, redis_url=redis_url), load(["worker.tasks.demo"]))
    lose_the_reply(engine, asyncio.CancelledError())
    try:
        with pytest.raises(asyncio.CancelledError):
            await engine._claim(arq_worker())  # type: ignore[arg-type]
        assert await pool.exists(keys.in_progress(task_id))  # the claim did take it, under this worker's lease
        await engine.stop()
        # Handed back, due now, its pickup given back: not left running under a lease nobody renews.
        assert not await pool.exists(keys.in_progress(task_id))
    finally:
        await pool.aclose()
    assert (await view(client, task_id))["state"] == "queued"
    spawn_worker(RELAY_QUEUE_NAME=name)
    ended = await until(lambda: _final(client, task_id), "the handed-back task ended")
    assert (ended["state"], ended["tries"]) == ("succeeded", 1)


async def test_a_claim_whose_reply_was_lost_to_a_redis_error_runs_its_jobs_at_the_next_poll(
    redis_url: str, queue: tuple[str, httpx.AsyncClient]
) -> None:
    name, client = queue
    task_id = await submit(client)
    pool = ArqRedis.from_url(redis_url)
    engine = Engine(pool, Settings(queue_name=name, redis_url=redis_url), load(["worker.tasks.demo"]))
    lose_the_reply(engine, RedisConnectionError("the reply was lost"))
    worker = arq_worker()
    try:
        with pytest.raises(RedisConnectionError):
            await engine._claim(worker)  # type: ignore[arg-type]
        await engine._claim(worker)  # type: ignore[arg-type]
        assert list(engine.runs) == [task_id]  # the same batch, run now: not left for its lease to lapse
        await until(lambda: _final(client, task_id), "the task ended")
        ended = await view(client, task_id)
        assert (ended["state"], ended["tries"]) == ("succeeded", 1)
    finally:
        await engine.stop()
        await pool.aclose()


async def _final(client: httpx.AsyncClient, task_id: str) -> dict[str, Any] | None:
    current = await view(client, task_id)
    return current if current["state"] in {"succeeded", "failed", "aborted"} else None
