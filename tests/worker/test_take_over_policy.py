"""The sweep takes over any lapsed lease, whatever its task: a worker that does not run the task read its policy as
0 retries, so a task allowing more tries than ``RELAY_MAX_PICKUPS`` was failed ``WorkerLost`` at pickup 5 where a
worker that runs it would have re-queued it. It now uses the policy the live workers that run it publish."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from arq.connections import ArqRedis

from shared.errors import UnknownTask
from shared.jobs import JobRecord
from shared.settings import Settings
from worker.engine.engine import Engine
from worker.engine.outcomes import Ending
from worker.engine.run import Claimed
from worker.tasks import load

RECORD = JobRecord(function="elsewhere", kwargs={}, enqueue_ms=0, fp="")  # a task this worker does not run


def engine_with(offer: Any) -> tuple[Engine, list[Ending]]:
    """An engine (it never connects) whose catalogue answers ``offer`` (an exception is raised), and the endings
    it commits."""
    engine = Engine(ArqRedis(host="127.0.0.1", port=1), Settings(max_pickups=5), load(["worker.tasks.demo"]))
    ended: list[Ending] = []

    class Offers:
        async def get(self, name: str) -> Any:
            if isinstance(offer, Exception):
                raise offer
            return offer

    async def commit_ending(ending: Ending, *_: Any) -> None:
        ended.append(ending)

    engine._catalogue_reader = Offers()  # type: ignore[assignment]
    engine.commit_ending = commit_ending  # type: ignore[assignment,method-assign]
    return engine, ended


@pytest.mark.parametrize(
    ("offer", "state"),
    [
        (SimpleNamespace(max_retries=7), "queued"),  # 8 pickups allowed: the fifth is not the last
        (UnknownTask("elsewhere", []), "failed"),  # no live worker runs it: RELAY_MAX_PICKUPS decides
    ],
    ids=["a-live-worker-runs-it", "none-does"],
)
async def test_a_lost_job_of_a_task_this_worker_does_not_run_is_judged_by_that_tasks_policy(
    offer: Any, state: str
) -> None:
    engine, ended = engine_with(offer)
    await engine._take_over_unknown(Claimed("t-1", RECORD, 5, False, 0, 0), RECORD)
    [ending] = ended
    assert ending.state.value == state
