"""Validating and enqueueing a submission, for every entry point (HTTP, Service Bus).

All checks happen before the single atomic arq enqueue, so a refused submission leaves nothing behind.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import Job, serialize_job

from shared import keys
from shared.errors import IdConflict, InvalidOptions, QueueFull
from shared.serialization import dumps, loads
from shared.settings import Settings
from shared.tasks import TaskState, TaskSubmission

if TYPE_CHECKING:
    from worker.registry import TaskRegistry


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submit: ``created`` is False when an identical task with this id already existed."""

    task_id: str
    task: str
    created: bool
    state: TaskState


# arq's enqueue (job key with expiry, then the queue's sorted set), plus the depth check and the
# workers' wake-up notice, in one atomic round trip: the depth limit is exact under concurrent
# submits, and a submit costs one Redis call instead of five. The job record is arq's own
# (``arq.jobs.serialize_job``), so arq's workers, Job handles and abort see no difference.
_ENQUEUE_LUA = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return {0, 0} end
local depth = redis.call('ZCARD', KEYS[3])
if depth >= tonumber(ARGV[5]) then return {-1, depth} end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
if ARGV[6] == '1' then redis.call('PUBLISH', KEYS[4], '1') end
return {1, depth + 1}
"""
_EXISTS, _FULL = 0, -1


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
    task_id = submission.id or uuid.uuid4().hex
    job_kwargs = _job_kwargs(params, submission.timeout_seconds)
    now_ms = int(time.time() * 1000)
    score = _score(submission, now_ms)
    job = serialize_job(spec.name, (), job_kwargs, None, now_ms, serializer=dumps)
    keys_ = [
        job_key_prefix + task_id,
        result_key_prefix + task_id,
        settings.queue_name,
        keys.wakeup_channel(settings.queue_name),
    ]
    expires_ms = score - now_ms + pool.expires_extra_ms  # what arq's enqueue_job uses
    script = pool.register_script(_ENQUEUE_LUA)  # EVALSHA, loading the script on first use
    args: list[bytes | str | int] = [job, score, expires_ms, task_id, settings.max_queue_depth, int(score <= now_ms)]
    outcome, depth = await script(keys=keys_, args=args)
    if outcome == _FULL:
        raise QueueFull(f"the queue holds {depth} tasks, its maximum; retry later")
    if outcome == _EXISTS:
        return await _existing(pool, settings, task_id, spec.name, job_kwargs)
    return Submitted(task_id, spec.name, True, TaskState.QUEUED if score <= now_ms else TaskState.DEFERRED)


def _score(submission: TaskSubmission, now_ms: int) -> int:
    """When the job becomes runnable, in arq's terms (ms since the epoch)."""
    if submission.delay_seconds:
        return now_ms + round(submission.delay_seconds * 1000)
    defer_until = submission.defer_until()
    return int(defer_until.timestamp() * 1000) if defer_until else now_ms


async def _existing(
    pool: ArqRedis, settings: Settings, task_id: str, name: str, job_kwargs: dict[str, Any]
) -> Submitted:
    """Same id, same task and arguments: the submit is a repeat. Anything else is a conflict."""
    info = await Job(task_id, pool, _queue_name=settings.queue_name, _deserializer=loads).info()
    if info is None or info.function != name or info.kwargs != job_kwargs:
        existing = None if info is None else (info.function, info.kwargs)
        raise IdConflict.between(task_id, existing, (name, job_kwargs))
    return Submitted(task_id, name, False, TaskState.QUEUED)
