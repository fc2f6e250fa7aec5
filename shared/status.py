"""A task's state, read from arq's own keys in one round trip."""

from __future__ import annotations

import datetime as dt
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import JobResult, deserialize_job, deserialize_result

from shared.serialization import loads
from shared.tasks import TaskState


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def _ms_iso(ms: float | None) -> str | None:
    return _iso(dt.datetime.fromtimestamp(ms / 1000, dt.UTC)) if ms else None


def _call(job_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The task's arguments and timeout, out of the envelope the API enqueues them in."""
    return {"arguments": job_kwargs.get("params", {}), "timeout_seconds": job_kwargs.get("timeout_seconds")}


def _final_state(result: JobResult) -> TaskState:
    if result.success:
        return TaskState.SUCCEEDED
    error = result.result
    if isinstance(error, dict) and error.get("error_type") == "CancelledError":
        return TaskState.ABORTED
    return TaskState.FAILED


def _error(result: JobResult) -> Any:
    error = result.result
    return error if isinstance(error, dict) else {"error_type": "Error", "message": str(error)}


async def task_view(pool: ArqRedis, queue_name: str, task_id: str) -> dict[str, Any] | None:
    """What ``GET /tasks/{id}`` shows, or None if Redis knows nothing of the task."""
    async with pool.pipeline(transaction=False) as pipe:
        pipe.get(result_key_prefix + task_id)
        pipe.exists(in_progress_key_prefix + task_id)
        pipe.zscore(queue_name, task_id)
        pipe.get(job_key_prefix + task_id)
        pipe.get(retry_key_prefix + task_id)
        raw_result, in_progress, score, raw_job, retries = await pipe.execute()
    if raw_result:
        result = deserialize_result(raw_result, deserializer=loads)
        state = _final_state(result)
        return {
            "id": task_id,
            "task": result.function,
            "state": state.value,
            "tries": result.job_try,
            **_call(result.kwargs),
            "result": result.result if result.success else None,
            "error": None if result.success else _error(result),
            "enqueued_at": _iso(result.enqueue_time),
            "started_at": _iso(result.start_time),
            "finished_at": _iso(result.finish_time),
        }
    if not raw_job:
        return None
    job = deserialize_job(raw_job, deserializer=loads)
    now_ms = dt.datetime.now(dt.UTC).timestamp() * 1000
    if in_progress:
        state = TaskState.RUNNING
    elif score is not None and score > now_ms:
        state = TaskState.DEFERRED
    else:
        state = TaskState.QUEUED
    return {
        "id": task_id,
        "task": job.function,
        "state": state.value,
        "tries": int(retries or 0),
        **_call(job.kwargs),
        "result": None,
        "error": None,
        "enqueued_at": _iso(job.enqueue_time),
        "scheduled_for": _ms_iso(score),
        "started_at": None,
        "finished_at": None,
    }


def is_final(view: dict[str, Any] | None) -> bool:
    """True once the task has a stored outcome."""
    return view is not None and view["state"] in {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.ABORTED}
