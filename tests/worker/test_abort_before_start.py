"""An abort that lands between a hand-off and the worker's pop: Redis already counts the job as running (the
enqueue claimed it for the worker), so the abort answers ``aborting`` and its notice asks the workers to cancel
it; the worker, not running it yet, dropped the notice, started the job on its pop, and cancelled it only at an
abort check up to a poll later, when a short task had already ended ``succeeded``. It now checks such a job as it
starts. A real engine, hand-offs on, against a real Redis; the notice is given to it as its listener would."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

from arq.connections import ArqRedis

from shared import keys
from shared.scripts import Scripts
from shared.settings import Settings
from shared.transitions import Transitions
from tests.support.claims import Submitter
from worker.engine.engine import Engine
from worker.tasks import load

STEP = 2.0  # the default RELAY_POLL_DELAY_SECONDS


async def test_a_job_aborted_after_its_hand_off_and_before_its_pop_is_cancelled_as_it_starts(
    pool: ArqRedis, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, queue_name=f"relay:ab:{uuid.uuid4().hex[:8]}")
    engine = Engine(pool, settings, load(["worker.tasks.demo", "tests.support.tasks"]))
    worker = SimpleNamespace(max_jobs=10, tasks={}, job_counter=0, allow_pick_jobs=True)
    engine._worker = worker  # type: ignore[assignment]
    try:
        await engine._claim(worker)  # type: ignore[arg-type]  # idle: registers for hand-offs
        task_id = await Submitter(pool, settings).submit("sleeps", kwargs={"seconds": 30})
        assert await pool.llen(keys.handoff(engine.token)) == 1  # type: ignore[misc]  # handed, not popped yet
        aborting = await Transitions(pool, Scripts(pool), settings).abort(task_id)
        assert aborting.outcome == "aborting"
        engine.note_abort(task_id)  # its notice, heard before the pop
        raw = await pool.lpop(keys.handoff(engine.token))  # type: ignore[misc]
        engine.receive_handoff(raw)
        assert task_id in engine.runs
        assert engine._sleep_seconds(STEP) == 0  # the abort is checked now, not a poll later
        await engine._check_aborts()
        deadline = asyncio.get_running_loop().time() + 10
        while (result := await pool.get(keys.result(task_id))) is None:
            assert asyncio.get_running_loop().time() < deadline, "the task did not end within 10 s"
            await asyncio.sleep(0.02)
        assert b"Aborted" in result
    finally:
        for run in list(engine.runs.values()):
            if run.task is not None:
                run.task.cancel()
        await engine.stop()
