"""How a run ended, and what each ending writes: Relay's words for every final state (no bare
``CancelledError``), the retry decision, and the commit op that records it with its events."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from shared import events
from shared.events import EventType
from shared.jobs import RETRYING, JobRecord, ResultRecord
from shared.retry import RetryPolicy
from shared.serialization import dumps
from shared.tasks import TaskState
from worker.engine.commit import Op, final_op, requeue_op, retry_op
from worker.engine.tries import TryCount, allowed_retries
from worker.outputs import bounded_message


def error_payload(exc: BaseException, message: str | None = None) -> dict[str, str]:
    """How a failure is shown to clients: a type name and a message (bounded: it is stored with the task);
    ``decide_failure`` adds the task's traceback."""
    return {"error_type": type(exc).__name__, "message": bounded_message(str(exc) if message is None else message)}


class TaskTimedOut(TimeoutError):
    """The task ran past its timeout."""


class ResultNotSerializable(TypeError):
    """The task returned something that is not JSON."""


class WorkerLost(RuntimeError):
    """The worker running the task stopped renewing its lease (killed, out of memory, node lost) too often."""


class JobRecordMissing(RuntimeError):
    """The job's record was gone when its turn came (deleted from Redis by hand, or lost in a restart)."""


class TriesExhausted(RuntimeError):
    """The task was picked up as often as it may be."""


class NotRunnable(LookupError):
    """No task of this name is registered on this worker."""


@dataclass(frozen=True)
class Ending:
    """A run's end: ``state`` is final (succeeded, failed, aborted) or ``retrying``/``queued``."""

    state: TaskState
    data: Any = None  # the result, or the error payload
    delay_seconds: float = 0.0
    reason: str = ""
    give_back_try: bool = False
    retried_failure: bool = False  # a failure the policy retries (counts against max_retries)


@dataclass(frozen=True)
class RunFacts:
    """What the op builder needs to know about the run."""

    task_id: str
    token: str
    queue_name: str
    try_number: int
    started_ms: int | None
    record: JobRecord | None
    function: str
    trace_id: str | None = None  # the run's trace (shared.tracing), carried by its events


def succeeded(result: Any) -> Ending:
    return Ending(TaskState.SUCCEEDED, result)


def failed(exc: BaseException, message: str | None = None) -> Ending:
    return Ending(TaskState.FAILED, error_payload(exc, message))


def aborted(reason: str) -> Ending:
    return Ending(TaskState.ABORTED, {"error_type": "Aborted", "message": reason}, reason=reason)


def requeued(reason: str, give_back_try: bool) -> Ending:
    return Ending(TaskState.QUEUED, reason=reason, give_back_try=give_back_try)


def decide_failure(
    exc: BaseException,
    timed_out: bool,
    policy: RetryPolicy,
    record: JobRecord,
    count: TryCount,
    traceback: str | None = None,
) -> Ending:
    """Retry the failure if the policy covers it, it has failures to retry left, and this try is not the last
    (``worker.engine.tries``); otherwise it is final. ``traceback`` (the task's own frames, see
    ``worker.tracebacks``) goes into the error when given."""
    error = error_payload(exc)
    if traceback is not None:
        error["traceback"] = traceback
    retried = policy.retries(exc, timed_out) and record.failures < allowed_retries(policy.max_retries, record)
    if retried and not count.last:
        delay = policy.delay(record.failures + 1)
        return Ending(TaskState.RETRYING, error, delay_seconds=delay, retried_failure=True)
    return Ending(TaskState.FAILED, error)


def op_for(ending: Ending, facts: RunFacts, seq: int, before: list[bytes] | None = None) -> Op:
    """The commit op that records ``ending``, with the events clients see for it (after ``before``: a
    ``started`` not yet written), published to the submitter's inbox too if the record names one."""
    op = _op_for(ending, facts, seq, before)
    op.inbox = (facts.record.inbox or "") if facts.record is not None else ""
    return op


def _op_for(ending: Ending, facts: RunFacts, seq: int, before: list[bytes] | None) -> Op:
    now = time.time()
    task_id = facts.task_id
    before = before or []
    if ending.state is TaskState.QUEUED:
        data = {"try": facts.try_number, "reason": ending.reason}
        bodies = [*before, events.body(task_id, EventType.REQUEUED, data, now, facts.trace_id)]
        return requeue_op(task_id, facts.token, seq, bodies, 0, ending.give_back_try, _link(facts))
    if ending.state is TaskState.RETRYING:
        assert facts.record is not None
        # For GET and the event only: the retry falls due after the delay on Redis's clock (commit.lua).
        next_ms = int((now + ending.delay_seconds) * 1000)
        record = facts.record
        record.wait = RETRYING
        record.failures += 1 if ending.retried_failure else 0
        record.last_error = ending.data
        record.next_try_ms = next_ms
        data = {
            "error": ending.data,
            "try": facts.try_number,
            "next_try_at": _iso(next_ms),
            "delay_seconds": round(ending.delay_seconds, 3),
        }
        bodies = [*before, events.body(task_id, EventType.RETRYING, data, now, facts.trace_id)]
        delay_ms = round(ending.delay_seconds * 1000)
        return retry_op(task_id, facts.token, seq, bodies, delay_ms, record.encode(), _link(facts))
    return _final(ending, facts, seq, now, before)


def _final(ending: Ending, facts: RunFacts, seq: int, now: float, before: list[bytes]) -> Op:
    record = facts.record
    state = ending.state.value
    result = ResultRecord(
        state=state,
        function=facts.function,
        kwargs=shown_kwargs(record) if record else {},
        job_try=facts.try_number,
        enqueue_ms=record.enqueue_ms if record else 0,
        result=ending.data,
        start_ms=facts.started_ms,
        finish_ms=int(now * 1000),
        queue_name=facts.queue_name,
        task_id=facts.task_id,
        fp=record.fp if record else "",
        tries_base=record.tries_base if record else 0,
        reply=record.reply if record else False,
        lane=record.lane if record else None,
        flow=record.flow if record else None,
        step=record.step if record else None,
        parent=record.parent if record else None,
    )
    trace_id = facts.trace_id
    if ending.state is TaskState.SUCCEEDED:
        first = events.body(facts.task_id, EventType.RESULT, ending.data, now, trace_id)
    elif ending.state is TaskState.ABORTED:
        first = events.body(facts.task_id, EventType.ABORTED, {"reason": ending.reason}, now, trace_id)
    else:
        first = events.body(facts.task_id, EventType.ERROR, ending.data, now, trace_id)
    bodies = [*before, first, events.end_body(facts.task_id, state, now, trace_id)]
    aborted = ending.state is TaskState.ABORTED
    link = _link(facts)
    value = dumps(ending.data) if link else b""
    return final_op(facts.task_id, facts.token, seq, bodies, result.encode(), result.reply, aborted, link, value)


def _link(facts: RunFacts) -> str:
    """What the run's commits name (``JobRecord.link``): its workflow and step, or its parent."""
    return facts.record.link if facts.record is not None else ""


def shown_kwargs(record: JobRecord) -> dict[str, Any]:
    """A job's kwargs as its result keeps them: a workflow step's input in its arguments, as it ran."""
    if not record.has_input:
        return record.kwargs
    return record.kwargs | {"params": record.params}


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()
