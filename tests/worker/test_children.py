"""A child submitted while its parent's abort is requested (the enqueue refuses it: ``shared/lua/enqueue.lua``)
ends the parent's run as aborted there and then, instead of failing it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from shared.errors import ParentAborting
from shared.jobs import JobRecord
from shared.settings import Settings
from worker.engine.children import Children
from worker.tasks import load


class RefusingEnqueuer:
    async def enqueue(self, prepared: Any) -> None:
        raise ParentAborting("this task's abort was requested: it submits no more children")


async def test_a_refused_child_ends_its_parents_run_as_aborted() -> None:
    engine = SimpleNamespace(registry=load(["worker.tasks.demo"]), settings=Settings(), enqueuer=RefusingEnqueuer())
    run = SimpleNamespace(engine=engine, task_id="parent", record=JobRecord("echo", {}, 0, ""), abort_requested=False)
    with pytest.raises(asyncio.CancelledError):
        await Children(run).submit("echo", [], {}, {})  # type: ignore[arg-type]
    assert run.abort_requested  # so the run's CancelledError is taken as the abort it is (JobRun._cancelled_ending)
