"""The minute's upkeep drops abort requests whose task neither runs nor waits, and keeps those of a task waiting
again: a running task whose abort was requested and that was then put back (its worker stopped, or was lost and
the sweep put its job back) waits with the request, which the claim that takes it honours (it ends ``aborted``).
Kept only while running, a request older than a minute was dropped while such a job waited, and the job then ran
though its abort had answered ``aborting``. A real engine's upkeep against a real Redis, a minute on."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis

from shared import keys
from shared.settings import Settings
from tests.support.claims import Submitter
from worker.engine.engine import Engine
from worker.tasks import load


async def redis_ms(pool: ArqRedis) -> int:
    seconds, micros = await pool.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_the_upkeep_keeps_the_abort_of_a_task_put_back_and_drops_one_of_a_task_gone(
    pool: ArqRedis, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, queue_name=f"relay:au:{uuid.uuid4().hex[:8]}")
    waiting = await Submitter(pool, settings).submit("sleeps")  # as a put-back job waits: its record, no marker
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    requested = await redis_ms(pool)  # after the enqueue: the request is for this run
    await pool.zadd(keys.abort_set(), {waiting: requested, gone: requested})
    engine = Engine(pool, settings, load(["worker.tasks.demo", "tests.support.tasks"]))
    await engine.sync_clock()
    engine._clock_offset_ms += 61_000  # the upkeep a minute on (Redis's clock as the engine estimates it)
    try:
        await engine._maintain_shard()
        assert await pool.zscore(keys.abort_set(), waiting) == requested
        assert await pool.zscore(keys.abort_set(), gone) is None
    finally:
        await pool.zrem(keys.abort_set(), waiting)
