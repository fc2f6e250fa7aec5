"""Aborting a task: a queued one is removed at once, a running one is cancelled by its worker via arq."""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum

from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import deserialize_job, serialize_result

from shared import keys
from shared.events import EventLog, EventType
from shared.serialization import dumps, loads
from shared.tasks import TaskState
from shared.wakeup import notify_workers

# Atomic, so a worker cannot pick the job up half-removed. Touching the in-progress key also fails a
# worker's WATCH/MULTI pickup that is in flight at this very moment.
_REMOVE_QUEUED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'running' end
if redis.call('EXISTS', KEYS[5]) == 1 then return 'finished' end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 'unknown' end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[1], '1', 'PX', 2000)
return 'removed'
"""


class AbortOutcome(StrEnum):
    """What ``DELETE /tasks/{id}`` achieved."""

    ABORTED = "aborted"  # was queued: removed, final
    ABORTING = "aborting"  # was running: its worker cancels it within one poll
    FINISHED = "finished"  # already had an outcome
    UNKNOWN = "unknown"


async def abort_task(
    pool: ArqRedis, events: EventLog, queue_name: str, task_id: str, result_ttl_seconds: int
) -> AbortOutcome:
    """Abort ``task_id`` whatever stage it is at."""
    raw_job = await pool.get(job_key_prefix + task_id)
    result = _aborted_result(raw_job, queue_name, task_id) if raw_job else b""
    script = pool.register_script(_REMOVE_QUEUED_LUA)
    keys_ = [
        in_progress_key_prefix + task_id,
        queue_name,
        job_key_prefix + task_id,
        retry_key_prefix + task_id,
        result_key_prefix + task_id,
    ]
    raw = await script(keys=keys_, args=[task_id, result, result_ttl_seconds * 1000])
    outcome = raw.decode() if isinstance(raw, bytes) else str(raw)
    if outcome == "removed":
        await events.publish_many(
            task_id, [(EventType.ABORTED, None), (EventType.END, {"state": TaskState.ABORTED.value})]
        )
        return AbortOutcome.ABORTED
    if outcome == "running":
        # The marker first: the worker reads it when the cancel arrives, to tell an abort from a shutdown.
        await pool.set(keys.abort_marker(task_id), b"1", ex=result_ttl_seconds)
        await pool.zadd(abort_jobs_ss, {task_id: int(time.time() * 1000)})
        await notify_workers(pool, queue_name)  # arq checks for aborts on each poll
        return AbortOutcome.ABORTING
    return AbortOutcome.FINISHED if outcome == "finished" else AbortOutcome.UNKNOWN


def _aborted_result(raw_job: bytes, queue_name: str, task_id: str) -> bytes:
    """An arq result record for a job aborted before it started, as arq itself would have written it."""
    job = deserialize_job(raw_job, deserializer=loads)
    now_ms = int(time.time() * 1000)
    data = serialize_result(
        job.function,
        tuple(job.args),
        job.kwargs,
        job.job_try or 0,
        int(job.enqueue_time.timestamp() * 1000),
        False,
        asyncio.CancelledError("aborted before start"),
        now_ms,
        now_ms,
        f"{task_id}:{job.function}",
        queue_name,
        task_id,
        serializer=dumps,
    )
    return data or b""
