"""Child tasks: a running task submits tasks of its own (``await ctx.submit``) and may wait for their results
(``await ctx.wait``).

A child is an ordinary task whose record names its parent (``JobRecord.parent``) and, if the parent is a
workflow's step, that workflow and step (its events join the workflow's stream, tagged with the parent's step).
Its id is the parent's plus a counter (``<parent>.1``, ``<parent>.2``, ...; after a manual retry, ``<parent>.r<n>.1``),
so a parent that runs again after its worker was lost submits the same children, and the enqueue's idempotence
hands back the ones that already exist instead of starting them twice.

Waiting never deadlocks a worker: a parent waiting for its children does not hold one of the worker's slots
(``Engine.begin_wait``), so a worker whose every slot held a waiting parent still claims the children (and other
work) while they wait. The parent's coroutine stays in memory and its lease is renewed; its timeout still counts.
A child's end (``commit.lua``, ``abort.lua``) publishes ``c<parent id>`` on the namespace's wake-up channel; the
waiting parent reads the children's results then, or every ``POLL_SECONDS`` if a notice was lost.

Cancelling a parent cancels its children: the enqueue adds each to its parent's set (``keys.children``), which
``DELETE /tasks/{id}`` and a workflow's cancel walk, recursively, once the parent's abort was requested; a child
submitted after that request is refused, and the submit ends the parent's run as aborted there and then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared import keys, tenancy
from shared.enqueue import Links, TaskShape, prepare
from shared.errors import ParentAborting
from shared.jobs import ResultRecord
from shared.tasks import TaskSubmission
from shared.waiting import wait_set
from worker.context import ChildFailed

if TYPE_CHECKING:
    from worker.engine.run import JobRun

POLL_SECONDS = 1.0  # a waiting parent reads its children's results at least this often


class Children:
    """The children of one run: submits them and waits for them."""

    def __init__(self, run: JobRun) -> None:
        self._run = run
        self._count = 0

    def next_id(self) -> str:
        """The next child's id, as its parent's tenant knows it (see the module docstring)."""
        self._count += 1
        parent = tenancy.client_id(self._run.task_id)
        base = self._run.record.tries_base
        return f"{parent}.{self._count}" if base == 0 else f"{parent}.r{base}.{self._count}"

    async def submit(self, task: str, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any]) -> str:
        """Enqueue a child (``SubmissionError`` if it cannot be); returns its id."""
        engine, record = self._run.engine, self._run.record
        submission = TaskSubmission(task=task, args=list(args), kwargs=kwargs, **({"id": self.next_id()} | options))
        spec: TaskShape = engine.registry.get(task) if task in engine.registry else await engine.catalogue.get(task)
        links = Links(flow=record.flow, step=record.step, parent=self._run.task_id)
        tenant = tenancy.owner(self._run.task_id)
        prepared = prepare(spec, engine.settings, submission, tenant=tenant, links=links)
        try:
            await engine.enqueuer.enqueue(prepared)
        except ParentAborting:  # its abort was requested before the engine saw it: the run ends aborted now
            self._run.abort_requested = True
            raise asyncio.CancelledError("aborted while submitting a child") from None
        return prepared.task_id

    async def wait(self, ids: Sequence[str], timeout: float | None) -> list[Any]:
        """The children's results, in order, once all ended (``ChildFailed`` for the first that did not
        succeed; ``TimeoutError`` after ``timeout`` seconds). Holds no slot meanwhile."""
        engine = self._run.engine
        deadline = None if timeout is None else time.monotonic() + timeout
        notice = engine.begin_wait(self._run)
        try:
            while True:
                notice.clear()
                raws = await engine.pool.mget([keys.result(i) for i in ids])
                if all(raws):
                    break
                left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
                if left <= 0:
                    pending = [i for i, raw in zip(ids, raws, strict=True) if not raw]
                    raise TimeoutError(f"children not ended after {timeout:g}s: {', '.join(pending)}")
                await wait_set(notice, left)
        finally:
            engine.end_wait(self._run)
        results = [ResultRecord.decode(raw) for raw in raws if raw]
        for child_id, result in zip(ids, results, strict=True):
            if result.state != "succeeded":
                raise ChildFailed(child_id, result.state, result.result)
        return [result.result for result in results]
