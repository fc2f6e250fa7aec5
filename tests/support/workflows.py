"""Submitting a workflow as the API does (``Workflows.submit``), for tests that drive the store directly."""

from __future__ import annotations

from arq.connections import ArqRedis

from shared.enqueue import TaskShape
from shared.scripts import Scripts
from shared.settings import Settings
from shared.transitions import Transitions
from shared.workflows.canvas import WorkflowSubmission
from shared.workflows.store import Workflows, WorkflowSubmitted, prepare_workflow
from worker.tasks import load

TASKS = load(["worker.tasks.demo", "tests.support.tasks"])


async def submit_chain(pool: ArqRedis, settings: Settings, flow_id: str) -> WorkflowSubmitted:
    """A two-step chain with id ``flow_id``."""

    async def shape_of(name: str) -> TaskShape:
        return TASKS.get(name)

    canvas = {"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}]}
    submission = WorkflowSubmission.model_validate({"workflow": canvas, "id": flow_id})
    prepared = await prepare_workflow(submission, shape_of, settings, None)
    scripts = Scripts(pool)
    return await Workflows(pool, scripts, settings, Transitions(pool, scripts, settings)).submit(prepared)
