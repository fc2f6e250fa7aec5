"""Turns a registered task into an arq job function that publishes its events and survives shutdowns.

Three things can cancel a running job, and each must end differently:
- an abort (``DELETE /tasks/{id}``): the API sets an abort marker first; the job ends ``aborted``;
- its own timeout: enforced here with ``asyncio.timeout`` so it surfaces as a failure, not a cancel;
- a worker shutdown (SIGTERM/SIGINT past the grace period): arq re-queues the job for another worker.
  arq counted that pickup as a try, so we give the try back: deploys must not exhaust ``max_tries``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.constants import retry_key_prefix
from arq.worker import Function, func
from redis.asyncio import Redis

from shared import keys
from shared.events import EventLog, EventType
from shared.serialization import dumps
from shared.tasks import TaskState
from shared.wakeup import notify_workers
from worker.context import TaskContext
from worker.registry import TaskSpec

logger = logging.getLogger("relay.worker")

EVENTS_CTX_KEY = "relay_events"
OUTCOME_CTX_KEY = "relay_outcome"
QUEUE_CTX_KEY = "relay_queue"
BRIDGE_CTX_KEY = "relay_bridge"
# arq's own timeout only backs ours up, so a slow task fails with our clearer error first.
ARQ_TIMEOUT_MARGIN_SECONDS = 5.0


class TaskTimedOut(TimeoutError):
    """The task ran past its timeout."""


class ResultNotSerializable(TypeError):
    """The task returned something that is not JSON."""


def error_payload(exc: BaseException) -> dict[str, str]:
    """How a failure is shown to clients: a type name and a message, never a traceback."""
    return {"error_type": type(exc).__name__, "message": str(exc)}


async def _is_abort(redis: Redis, task_id: str) -> bool:
    try:
        return bool(await redis.exists(keys.abort_marker(task_id)))
    except Exception:  # Redis gone mid-shutdown: treat as a shutdown, which loses nothing
        logger.warning("could not read the abort marker of %s; treating the cancel as a shutdown", task_id)
        return False


async def _give_back_try(redis: Redis, events: EventLog, task_id: str, job_try: int) -> None:
    """Undo arq's try count for a pickup that a shutdown cut short, and tell clients it will run again."""
    try:
        await redis.decr(retry_key_prefix + task_id)
        await events.publish(task_id, EventType.REQUEUED, {"try": job_try, "reason": "worker shutdown"})
    except Exception:
        logger.warning("could not record the re-queue of %s", task_id, exc_info=True)


def job_function(spec: TaskSpec, default_timeout: float, max_tries: int) -> Function:
    """The arq ``Function`` that runs ``spec`` with events, timeout and shutdown handling."""
    task_timeout = spec.timeout_seconds or default_timeout

    async def run(ctx: dict[str, Any], params: dict[str, Any], timeout_seconds: float | None = None) -> Any:
        task_id: str = ctx["job_id"]
        job_try: int = ctx["job_try"]
        events: EventLog = ctx[EVENTS_CTX_KEY]
        await events.publish(task_id, EventType.STARTED, {"task": spec.name, "try": job_try})
        limit = min(timeout_seconds or task_timeout, task_timeout)
        try:
            async with asyncio.timeout(limit):
                result = await spec.fn(TaskContext(task_id, job_try, events), **spec.parse(params))
            try:
                dumps(result)
            except TypeError as exc:
                raise ResultNotSerializable(str(exc)) from None
        except asyncio.CancelledError:
            if await _is_abort(ctx["redis"], task_id):
                ctx[OUTCOME_CTX_KEY] = (EventType.ABORTED, None, TaskState.ABORTED)
            else:
                await _give_back_try(ctx["redis"], events, task_id, job_try)
            raise
        except TimeoutError:
            timed_out = TaskTimedOut(f"task exceeded its timeout of {limit:g}s")
            ctx[OUTCOME_CTX_KEY] = (EventType.ERROR, error_payload(timed_out), TaskState.FAILED)
            raise timed_out from None
        except Exception as exc:
            ctx[OUTCOME_CTX_KEY] = (EventType.ERROR, error_payload(exc), TaskState.FAILED)
            raise
        ctx[OUTCOME_CTX_KEY] = (EventType.RESULT, result, TaskState.SUCCEEDED)
        return result

    run.__qualname__ = spec.name
    return func(run, name=spec.name, timeout=task_timeout + ARQ_TIMEOUT_MARGIN_SECONDS, max_tries=max_tries)


async def publish_outcome(ctx: dict[str, Any]) -> None:
    """arq ``after_job_end`` hook: runs once the result is stored, so a client that sees ``end`` and
    then asks ``GET /tasks/{id}`` finds the final state."""
    outcome = ctx.get(OUTCOME_CTX_KEY)
    if outcome is None:  # re-queued by a shutdown: arq has just released it, so wake another worker
        await notify_workers(ctx["redis"], ctx[QUEUE_CTX_KEY])
        return
    type_, data, state = outcome
    events: EventLog = ctx[EVENTS_CTX_KEY]
    task_id: str = ctx["job_id"]
    await events.publish_many(task_id, [(type_, data), (EventType.END, {"state": state.value})])
    bridge = ctx.get(BRIDGE_CTX_KEY)
    if bridge is not None:
        try:
            await bridge.replies.send_for(task_id, state.value, data)
        except Exception:
            logger.exception("could not send the Service Bus reply for %s", task_id)
