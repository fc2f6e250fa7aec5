"""A retry committed with a short delay can be claimed again by the same worker, and started, before the run that
committed it has ended here (its commit's reply still on its way). The run that ends must not take the new run's
place with it: everything was keyed by task id, so the first run's end removed the second from the engine's runs
and stopped renewing its lease, and a lost-lease notice meant for the first cancelled the second; another worker
then took the job over while it still ran here (a review hit it in 29 rounds of 30). Real engine and Redis; the
runs themselves wait on the test."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.jobs import JobRecord
from shared.settings import Settings
from tests.support.claims import Submitter
from worker.engine.engine import Engine
from worker.engine.run import Claimed, JobRun
from worker.tasks import load


async def test_the_end_of_a_run_leaves_the_next_run_of_its_id_in_place(
    pool: ArqRedis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ends = {1: asyncio.Event(), 2: asyncio.Event()}

    async def run(self: JobRun) -> None:  # stands in for the task's run and its commit
        self.began = True
        await ends[self.claimed.try_number].wait()

    monkeypatch.setattr(JobRun, "run", run)
    settings = Settings(redis_url=redis_url, queue_name=f"relay:rr:{uuid.uuid4().hex[:8]}", handoff=False)
    engine = Engine(pool, settings, load(["worker.tasks.demo", "tests.support.tasks"]))
    worker = SimpleNamespace(max_jobs=10, tasks={}, job_counter=0, allow_pick_jobs=True)
    task_id = await Submitter(pool, settings).submit("sleeps")
    record = JobRecord.decode(await pool.get(keys.job(task_id)))
    first, second = (Claimed(task_id, record, n, False, 0, 0) for n in (1, 2))

    engine._start(worker, first)  # type: ignore[arg-type]
    first_run = engine.runs[task_id]
    engine._start(worker, second)  # type: ignore[arg-type]  # claimed again before the first run ended here
    second_run = engine.runs[task_id]
    ends[1].set()
    assert first_run.task is not None
    await first_run.task  # its done callback (``_finished``) was added first, so it has run by now
    assert engine.runs.get(task_id) is second_run
    assert engine.leases._held[task_id][1] is second_run  # still renewed
    engine.lease_lost(task_id, first_run)  # the keeper's notice about the first run's lease
    assert not second_run.lease_lost

    ends[2].set()
    assert second_run.task is not None
    await second_run.task
    assert task_id not in engine.runs
    assert task_id not in engine.leases._held
