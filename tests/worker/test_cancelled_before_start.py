"""A stop's cancel that lands in the loop turn that started a job (arq's handler for a second signal, or the end
of the grace period) cancels the run before its first step: none of it ran and nothing was recorded, so the job
sat under this worker's lease until it lapsed, then was taken over as a lost worker's with a try counted (on its
last try, failed ``WorkerLost``). It is now handed back as a stop hands back what it did not run. A real engine
against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.settings import Settings
from shared.status import task_view
from tests.support.claims import Submitter
from worker.engine.engine import Engine
from worker.tasks import load


async def test_a_run_cancelled_before_its_first_step_is_handed_back_with_its_try(
    pool: ArqRedis, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, queue_name=f"relay:cb:{uuid.uuid4().hex[:8]}", handoff=False)
    engine = Engine(pool, settings, load(["worker.tasks.demo", "tests.support.tasks"]))
    worker = SimpleNamespace(max_jobs=10, tasks={}, job_counter=0, allow_pick_jobs=True)
    task_id = await Submitter(pool, settings).submit("sleeps", max_retries=0)
    await engine._claim(worker)  # type: ignore[arg-type]  # starts it: its task is created, not yet stepped
    engine.begin_stop(0)
    [task] = worker.tasks.values()
    task.cancel()  # in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not engine.runs
    await engine.stop()
    assert await pool.get(keys.in_progress(task_id)) is None  # not left to lapse
    view = await task_view(pool, settings.queue_name, task_id)
    assert view is not None
    assert (view["state"], view["tries"]) == ("queued", 0)  # its try given back: it never ran
