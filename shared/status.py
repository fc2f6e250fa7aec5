"""A task's state, read from its records in one round trip, in Relay's words."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from arq.connections import ArqRedis

from shared import keys, lanes
from shared.jobs import RETRYING, JobRecord, ResultRecord
from shared.tasks import FINAL_STATES, TaskState

# The timeout a task of a given name runs with when its submit named none (None if unknown here).
TimeoutFor = Callable[[str], float | None]


def _ms_iso(ms: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat() if ms else None


def _timeout(kwargs: dict[str, Any], name: str, timeout_for: TimeoutFor | None) -> float | None:
    asked = kwargs.get("timeout_seconds")
    limit = timeout_for(name) if timeout_for else None
    if asked is not None and limit is not None:
        return min(float(asked), limit)
    return float(asked) if asked is not None else limit


def parse_marker(raw: bytes | None) -> tuple[int, int] | None:
    """(try, start ms) from an in-progress marker ``<token>|<try>|<start ms>[|<slot>|<lane>]`` (``lib.lua``
    relay_marker_parts), if it is one of Relay's (a token has no ``|``)."""
    if not raw:
        return None
    parts = raw.split(b"|", 3)
    if len(parts) < 3:
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


async def task_view(
    pool: ArqRedis, queue_name: str, task_id: str, timeout_for: TimeoutFor | None = None
) -> dict[str, Any] | None:
    """What ``GET /tasks/{id}`` shows, or None if Redis knows nothing of the task."""
    return (await task_views(pool, queue_name, [task_id], timeout_for))[0]


async def task_views(
    pool: ArqRedis, queue_name: str, task_ids: list[str], timeout_for: TimeoutFor | None = None
) -> list[dict[str, Any] | None]:
    """``task_view`` of several tasks in one round trip."""
    async with pool.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            with keys.on_task_shard(task_id) if keys.shard_count() > 1 else nullcontext():  # each in its shard
                pipe.get(keys.result(task_id))
                pipe.get(keys.job(task_id))
                pipe.get(keys.in_progress(task_id))
                pipe.zscore(keys.schedule(queue_name), task_id)
                pipe.get(keys.tries(task_id))
        replies = await pipe.execute()
    views: list[dict[str, Any] | None] = []
    for i, task_id in enumerate(task_ids):
        raw_result, raw_job, marker, score, tries = replies[5 * i : 5 * i + 5]
        if raw_result:
            views.append(result_view(task_id, ResultRecord.decode(raw_result), timeout_for))
        elif raw_job:
            job = JobRecord.decode(raw_job)
            views.append(job_view(task_id, job, parse_marker(marker), score, int(tries or 0), timeout_for))
        else:
            views.append(None)
    return views


def result_view(task_id: str, result: ResultRecord, timeout_for: TimeoutFor | None = None) -> dict[str, Any]:
    """An ended task."""
    try:
        state = TaskState(result.state)
    except ValueError:
        state = TaskState.FAILED
    succeeded = state is TaskState.SUCCEEDED
    return {
        "id": task_id,
        "task": result.function,
        "state": state.value,
        "tries": result.job_try,
        "arguments": result.kwargs.get("params", {}),
        "timeout_seconds": _timeout(result.kwargs, result.function, timeout_for),
        "result": result.result if succeeded else None,
        "error": None if succeeded else _error(result.result),
        "enqueued_at": _ms_iso(result.enqueue_ms),
        "scheduled_for": None,
        "started_at": _ms_iso(result.start_ms),
        "finished_at": _ms_iso(result.finish_ms),
        "last_error": None,
        "next_try_at": None,
    } | _lane_fields(result.lane)


def _lane_fields(lane: str | None) -> dict[str, Any]:
    """The named queue and priority a task waits (or waited) at, and its lane id (``LANE``: for the API's
    waiting reason, never shown)."""
    parts = lanes.parse(lane or "")
    return {"queue": parts.queue, "priority": parts.priority, LANE: lane}


LANE = "lane"  # a view's private field: its lane id (``shared.lanes``), or None


def job_view(
    task_id: str,
    job: JobRecord,
    marker: tuple[int, int] | None,
    score: float | None,
    tries: int,
    timeout_for: TimeoutFor | None = None,
) -> dict[str, Any]:
    """A task that has not ended: waiting (queued, deferred, retrying) or running."""
    now_ms = dt.datetime.now(dt.UTC).timestamp() * 1000
    started = None
    # A waiting job's due time is in its record (the lanes that order the claims are in shared/keys.py); this
    # process's clock only tells "deferred" from "queued" for display.
    due = job.next_try_ms if job.wait == RETRYING else job.due_ms
    if marker is not None or (score is not None and score >= keys.RUNNING_BASE):
        state = TaskState.RUNNING
        if marker is not None:
            tries, started = marker
    elif due is not None and due > now_ms:
        state = TaskState.RETRYING if job.wait == RETRYING else TaskState.DEFERRED
    else:
        state = TaskState.QUEUED
    waiting = state is not TaskState.RUNNING
    return {
        "id": task_id,
        "task": job.function,
        "state": state.value,
        "tries": tries,
        "arguments": job.params,
        "timeout_seconds": _timeout(job.kwargs, job.function, timeout_for),
        "result": None,
        "error": None,
        "enqueued_at": _ms_iso(job.enqueue_ms),
        "scheduled_for": _ms_iso(due or job.enqueue_ms) if waiting else None,
        "started_at": _ms_iso(started),
        "finished_at": None,
        "last_error": job.last_error,
        "next_try_at": _ms_iso(job.next_try_ms) if state is TaskState.RETRYING else None,
    } | _lane_fields(job.lane)


def _error(error: Any) -> dict[str, Any]:
    return error if isinstance(error, dict) else {"error_type": "Error", "message": str(error)}


def is_final(view: dict[str, Any] | None) -> bool:
    """True once the task has a stored outcome."""
    return view is not None and view["state"] in FINAL_STATES
