"""Validating and enqueueing a submission, for every entry point (HTTP, Service Bus).

All checks happen before the single atomic arq enqueue, so a refused submission leaves nothing behind.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis
from arq.jobs import Job

from shared.errors import IdConflict, InvalidOptions, QueueFull
from shared.serialization import loads
from shared.settings import Settings
from shared.tasks import TaskState, TaskSubmission
from shared.wakeup import notify_workers

if TYPE_CHECKING:
    from worker.registry import TaskRegistry


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submit: ``created`` is False when an identical task with this id already existed."""

    task_id: str
    task: str
    created: bool
    state: TaskState


def _job_kwargs(params: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    return {"params": params} if timeout is None else {"params": params, "timeout_seconds": timeout}


async def enqueue_task(
    pool: ArqRedis, registry: TaskRegistry, settings: Settings, submission: TaskSubmission
) -> Submitted:
    """Enqueue ``submission`` once; a ``SubmissionError`` says what was wrong with it."""
    spec = registry.get(submission.task)
    params = spec.validate(submission.args, submission.kwargs)
    max_timeout = spec.timeout_seconds or settings.job_timeout_seconds
    if submission.timeout_seconds is not None and submission.timeout_seconds > max_timeout:
        raise InvalidOptions(
            f"timeout_seconds may be at most {max_timeout:g} for {spec.name!r}",
            [{"loc": ["timeout_seconds"], "msg": f"must be <= {max_timeout:g}"}],
        )
    depth = await pool.zcard(settings.queue_name)
    if depth >= settings.max_queue_depth:
        raise QueueFull(f"the queue holds {depth} tasks, its maximum; retry later")
    task_id = submission.id or uuid.uuid4().hex
    job_kwargs = _job_kwargs(params, submission.timeout_seconds)
    job = await pool.enqueue_job(
        spec.name,
        _job_id=task_id,
        _queue_name=settings.queue_name,
        _defer_by=submission.delay_seconds or None,
        _defer_until=submission.defer_until(),
        **job_kwargs,
    )
    if job is None:
        return await _existing(pool, settings, task_id, spec.name, job_kwargs)
    deferred = bool(submission.delay_seconds) or submission.defer_until() is not None
    if not deferred:
        await notify_workers(pool, settings.queue_name)
    return Submitted(task_id, spec.name, True, TaskState.DEFERRED if deferred else TaskState.QUEUED)


async def _existing(
    pool: ArqRedis, settings: Settings, task_id: str, name: str, job_kwargs: dict[str, Any]
) -> Submitted:
    """Same id, same task and arguments: the submit is a repeat. Anything else is a conflict."""
    info = await Job(task_id, pool, _queue_name=settings.queue_name, _deserializer=loads).info()
    if info is None or info.function != name or info.kwargs != job_kwargs:
        raise IdConflict(f"a different task already has id {task_id!r}")
    return Submitted(task_id, name, False, TaskState.QUEUED)
