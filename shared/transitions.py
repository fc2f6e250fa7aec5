"""State changes made from outside a worker: abort, manual retry, and a stream's ``end`` repair.

Each is one Lua script that re-checks the task's state and writes the change with its events, so it is
atomic against workers and other API processes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis

from shared import events, keys, tracing
from shared.events import EventType
from shared.jobs import JobRecord, ResultRecord
from shared.scripts import Scripts
from shared.settings import Settings
from shared.status import task_view

ABORT_BATCH = 50  # tasks aborted at once (each is its own script call)


class AbortOutcome(StrEnum):
    """What ``DELETE /tasks/{id}`` achieved."""

    ABORTED = "aborted"  # was waiting: removed, final
    ABORTING = "aborting"  # was running: its worker cancels it
    FINISHED = "finished"  # already had an outcome
    UNKNOWN = "unknown"


class RetryOutcome(StrEnum):
    """What ``POST /tasks/{id}/retry`` achieved."""

    QUEUED = "queued"
    NOT_RETRYABLE = "not_retryable"
    WORKFLOW_STEP = "workflow_step"  # a workflow's step: retried with its workflow (POST /workflows/{id}/retry)
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Transition:
    """A script's answer: the outcome, and the state it found when it changed nothing."""

    outcome: str
    state: str | None = None


class Transitions:
    """The API's state changes for one queue."""

    def __init__(self, pool: ArqRedis, scripts: Scripts, settings: Settings) -> None:
        self._pool = pool
        self._scripts = scripts
        self._settings = settings

    @property
    def _ttl_ms(self) -> int:
        return self._settings.result_ttl_seconds * 1000

    @property
    def _log_caps(self) -> tuple[int, int]:
        """A task log's caps, as the scripts that append to it take them: entries, then bytes."""
        return self._settings.event_log_max_len, self._settings.event_log_max_bytes

    async def abort(self, task_id: str) -> Transition:
        """Abort ``task_id``: a waiting one ends now; a running one is cancelled by its worker."""
        queue = self._settings.queue_name
        raw_job, tries = await self._pool.mget([keys.job(task_id), keys.tries(task_id)])
        now = time.time()
        record = b""
        trace_id = None
        if raw_job:
            job = JobRecord.decode(raw_job)
            trace_id = tracing.context_span(tracing.carrier_of(job)).trace_id
            record = ResultRecord(
                state="aborted",
                function=job.function,
                kwargs=job.kwargs | {"params": job.params} if job.has_input else job.kwargs,
                job_try=int(tries or 0),
                enqueue_ms=job.enqueue_ms,
                result={"error_type": "Aborted", "message": "aborted before it started"},
                start_ms=None,
                finish_ms=int(now * 1000),
                queue_name=queue,
                task_id=task_id,
                fp=job.fp,
                tries_base=job.tries_base,
                reply=job.reply,
                lane=job.lane,
                flow=job.flow,
                step=job.step,
                parent=job.parent,
            ).encode()
        bodies = [
            events.body(task_id, EventType.ABORTED, {"reason": "aborted before it started"}, now, trace_id),
            events.end_body(task_id, "aborted", now, trace_id),
        ]
        args: list[Any] = [task_id, int(now * 1000), self._ttl_ms, *self._log_caps]
        args += [keys.wakeup_channel(queue), record, *bodies]
        reply = await self._scripts.abort(
            keys=[keys.schedule(queue), keys.abort_set(), keys.reply_outbox(queue)], args=args
        )
        return _transition(reply)

    async def abort_children(self, parents: list[str]) -> int:
        """Abort the children of ``parents`` (tasks they submitted with ``ctx.submit``), and theirs, recursively;
        returns how many were waiting or running. Call it once the parents' own aborts were requested (or they
        ended): a child is aborted before its own children are read, and the enqueue refuses a child whose parent's
        abort was requested, so none submitted meanwhile is missed. Each abort is one script (``abort``), and a
        second walk finds them ended: safe to run again."""
        seen, level, stopped = set(parents), list(parents), 0
        while level:
            async with self._pool.pipeline(transaction=False) as pipe:
                for parent in level:
                    pipe.smembers(keys.children(parent))
                found: list[set[bytes]] = await pipe.execute()
            level = sorted({child.decode() for members in found for child in members} - seen)
            seen.update(level)
            for first in range(0, len(level), ABORT_BATCH):
                done = await asyncio.gather(*(self.abort(child) for child in level[first : first + ABORT_BATCH]))
                stopped += sum(1 for d in done if d.outcome in (AbortOutcome.ABORTED, AbortOutcome.ABORTING))
        return stopped

    async def retry(self, task_id: str, trace_carrier: dict[str, str] | None = None) -> Transition:
        """Run an ended (failed or aborted) task again under the same id; the new run continues the trace of
        ``trace_carrier`` (the retry request's), if given."""
        queue = self._settings.queue_name
        raw = await self._pool.get(keys.result(task_id))
        if not raw:
            view = await task_view(self._pool, queue, task_id)
            if view is None:
                return Transition(RetryOutcome.UNKNOWN)
            return Transition(RetryOutcome.NOT_RETRYABLE, str(view["state"]))
        result = ResultRecord.decode(raw)
        now = time.time()
        job = JobRecord(
            result.function,
            result.kwargs,
            result.enqueue_ms,
            result.fp,
            tries_base=result.job_try,
            reply=result.reply,
            lane=result.lane,
        )
        trace = tracing.context_span(trace_carrier or {})
        if trace.trace_id is not None:
            job.extra[tracing.CARRIER_FIELD] = trace.carrier()
        data = {"try": result.job_try + 1, "reason": "retry requested"}
        bodies = [events.body(task_id, EventType.REQUEUED, data, now, trace.trace_id)]
        args: list[Any] = [task_id, int(now * 1000), self._ttl_ms, *self._log_caps]
        args += [keys.wakeup_channel(queue), job.encode(), result.job_try, time.time_ns() // 1000, *bodies]
        reply = await self._scripts.retry(
            keys=[keys.schedule(queue), keys.task_index(queue), keys.abort_set()], args=args
        )
        return _transition(reply)

    async def repair_end(self, task_id: str) -> bool:
        """If the task ended (or is unknown) and its log does not end with ``end``, publish its final events.
        True when the log now ends with ``end``."""
        queue = self._settings.queue_name
        view = await task_view(self._pool, queue, task_id)
        now = time.time()
        if view is None:
            expect, bodies = "unknown", [events.end_body(task_id, "unknown", now)]
        elif view["state"] in ("succeeded", "failed", "aborted"):
            expect, bodies = "final", _final_bodies(task_id, view, now)
        else:
            return False
        args: list[bytes | str | int] = [
            task_id,
            expect,
            int(now * 1000),
            self._ttl_ms,
            *self._log_caps,
            keys.schedule(queue),
            *bodies,
        ]
        # The stream as a key (the script builds it from the id): a cluster client routes by it.
        answer = await self._scripts.repair(keys=[keys.events_stream(task_id)], args=args)
        return answer in (b"published", b"has_end")


def _transition(reply: list[Any]) -> Transition:
    """A script's answer: its outcome, and the state it names (when the second item is one, not a seq)."""
    state = reply[1].decode() if len(reply) > 1 and isinstance(reply[1], bytes) else None
    return Transition(reply[0].decode(), state)


def _final_bodies(task_id: str, view: dict[str, Any], now: float) -> list[bytes]:
    state = view["state"]
    if state == "succeeded":
        first = events.body(task_id, EventType.RESULT, view["result"], now)
    elif state == "aborted":
        first = events.body(task_id, EventType.ABORTED, {"reason": (view["error"] or {}).get("message")}, now)
    else:
        first = events.body(task_id, EventType.ERROR, view["error"], now)
    return [first, events.end_body(task_id, state, now)]
