"""One claimed job, from its start to its committed outcome.

Three things can cancel a running job, and each is recognised positively, never by elimination:
- an abort (``DELETE /tasks/{id}`` or arq's ``Job.abort``): the engine sets ``abort_requested`` first;
- its worker stopping (SIGTERM/SIGINT past the grace period, or a second signal): the engine's shutdown flag,
  set from the signal handler; the job goes back on the queue and its try is given back;
- its lease lost (its worker stalled so long that another worker took the job over): nothing is written.
Any other ``CancelledError`` (most often the task's own code awaiting something cancelled) fails the try
like any other error: a give-back re-queue would run it again forever.
A task's own timeout is Relay's ``asyncio.timeout``: it ends the run as a failure (``TaskTimedOut``), which the
task's retry policy may retry.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arq.worker import Retry
from redis.exceptions import RedisError

from shared import events, tracing
from shared.errors import InvalidArguments
from shared.events import EventType
from shared.jobs import JobRecord
from shared.serialization import dumps
from shared.tasks import TaskState
from worker.context import Done, TaskContext
from worker.engine import outcomes, tries
from worker.engine.children import Children
from worker.engine.commit import Op, OpResult, events_op
from worker.engine.outcomes import Ending, RunFacts
from worker.outputs import OutputTooLarge, check_event, check_result
from worker.registry import TaskSpec
from worker.tracebacks import task_traceback

if TYPE_CHECKING:
    from worker.engine.engine import Engine

logger = logging.getLogger("relay.worker")

# How long ``started`` waits for the run's other events: a task that ends within it (most short I/O tasks, and
# one that awaits once) writes ``started``, its result and ``end`` as one log entry and one message in one commit;
# a longer one's followers see ``started`` this much later (its timestamp is still the start). 10 ms is below
# what a person or a dashboard notices; a separate ``started`` costs about 7 Redis commands more per task.
STARTED_HOLD_SECONDS = 0.01
THREAD_WAIT_SECONDS = 0.2  # how often a task thread waiting for its event checks that its run is still on


@dataclass
class Claimed:
    """A job this worker now owns, as the claim script returned it."""

    task_id: str
    record: JobRecord | None
    try_number: int
    aborted: bool
    due_ms: int
    seq: int


class JobRun:
    """Runs one claimed job and commits how it ended (the task's ``EventSink`` too)."""

    def __init__(self, engine: Engine, claimed: Claimed, spec: TaskSpec, record: JobRecord) -> None:
        self.engine = engine
        self.claimed = claimed
        self.spec = spec
        self.record = record
        self.task_id = claimed.task_id
        self.seq = claimed.seq
        self.started_ms = int(time.time() * 1000)
        self.deadline = time.monotonic() + self.timeout_seconds
        self.abort_requested = False
        self.began = False  # whether ``run`` got its first step: a task cancelled before it never runs any of it
        self.lease_lost = False
        self._stopping = False
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.task: asyncio.Task[None] | None = None
        self._pending_started: bytes | None = None
        self.span: tracing.SpanHandle | None = None  # this try's span (shared.tracing), from ``run``
        self.trace_id: str | None = None
        self.refused: OutputTooLarge | None = None  # an output over its limit: the try fails with it
        self.children = Children(self)

    @property
    def timeout_seconds(self) -> float:
        """The submit's timeout if it gave one, never above the task's own."""
        limit = self.spec.timeout_seconds or self.engine.settings.job_timeout_seconds
        asked = self.record.timeout_seconds
        return min(asked, limit) if asked else limit

    @property
    def cancelled(self) -> bool:
        """Aborted, timed out, or being stopped: what a plain ``def`` task can check between steps."""
        return self._stopping or self._closed

    def emit(self, type_: EventType, data: Any) -> Awaitable[None]:
        """Queue an event for the next commit (``EventSink``); from a task thread, wait until it is stored."""
        # A TypeError here tells the task its data is not JSON; an EventTooLarge, that it is too large.
        body = events.body(self.task_id, type_, data, trace_id=self.trace_id)
        try:
            check_event(type_.value, body, self.engine.settings.max_event_bytes)
        except OutputTooLarge as exc:
            raise self._refuse(exc) from None
        if threading.get_ident() != self._loop_thread:
            self._wait_from_thread(body)
            return Done()
        if self._closed:
            return Done()  # a task thread that outlived its run: its late events are dropped
        return self._queue_events([body])

    def submit_child(
        self, task: str, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Awaitable[str]:
        """A child task (``EventSink``; ``worker.engine.children``), from an ``async def`` task."""
        self._on_loop("ctx.submit")
        return self.children.submit(task, args, kwargs, options)

    def wait_children(self, ids: Sequence[str], timeout: float | None) -> Awaitable[list[Any]]:
        """Wait for child tasks (``EventSink``), from an ``async def`` task."""
        self._on_loop("ctx.wait")
        return self.children.wait(ids, timeout)

    def _on_loop(self, what: str) -> None:
        if threading.get_ident() != self._loop_thread:
            raise TypeError(f"{what} is for async def tasks (a plain def task's thread would be held while it waits)")

    def _wait_from_thread(self, body: bytes) -> None:
        """In a task thread: wait until the event is stored, or until the run has ended (its late events are
        dropped), never forever on a loop that has stopped (the worker is exiting)."""
        if self._closed:
            return
        try:
            stored = asyncio.run_coroutine_threadsafe(self._emit_from_thread(body), self._loop)
        except RuntimeError:  # the loop is closed
            return
        while True:
            try:
                return stored.result(timeout=THREAD_WAIT_SECONDS)
            except concurrent.futures.TimeoutError:
                if self._closed or not self._loop.is_running():
                    stored.cancel()
                    return

    async def _emit_from_thread(self, body: bytes) -> None:
        if not self._closed:
            await self._queue_events([body])

    def _queue_events(self, bodies: list[bytes]) -> asyncio.Future[None]:
        """Queue the events; the returned future resolves once they are stored (or fails if they cannot be)."""
        bodies = self._take_started() + bodies
        op = events_op(self.task_id, self.engine.token, self.seq, bodies, self.record.link, self.record.inbox or "")
        self.seq += len(bodies)
        stored: asyncio.Future[None] = self._loop.create_future()

        def settle(future: asyncio.Future[OpResult]) -> None:
            if stored.done():  # the task stopped waiting (it was cancelled); the event still went out
                return
            if future.cancelled():
                stored.cancel()
            elif (exc := future.exception()) is not None:
                logger.warning("events of task %s not stored: %s", self.task_id, exc)
                stored.set_exception(exc)
            else:
                self.lease_lost = self.lease_lost or future.result().status == "fenced"
                stored.set_result(None)

        self.engine.committer.queue(op).add_done_callback(settle)
        return stored

    async def run(self) -> None:
        """Run the task, then commit its ending; never raises (arq gathers these tasks at shutdown).

        ``started`` goes out with the run's first other events, or ``STARTED_HOLD_SECONDS`` after the start if
        the task is still running then: a task that ends sooner writes ``started``, its result and ``end`` as
        one log entry, one message, in one commit."""
        self.began = True
        span = self.span = tracing.run_span(self.spec.name, self.task_id, self.try_number, self.carrier)
        span.activate()
        self.trace_id = span.trace_id
        started = {"task": self.spec.name, "try": self.try_number}
        self._pending_started = events.body(self.task_id, EventType.STARTED, started, trace_id=self.trace_id)
        self._loop.call_later(STARTED_HOLD_SECONDS, self._flush_started)
        self.engine.log_start(self)
        waited = self.started_ms - self.claimed.due_ms if self.claimed.due_ms else None
        self.engine.metrics.task_started(self.spec.name, waited)
        ending = await self._execute()
        self._closed = True
        commit = asyncio.ensure_future(self._commit(ending, self._commit_now(ending)))
        while not commit.done():
            with contextlib.suppress(asyncio.CancelledError):  # a second cancel must not lose the outcome
                await asyncio.shield(commit)
        span.set("relay.task.outcome", ending.state.value if ending.state is not TaskState.QUEUED else "requeued")
        span.end(_span_error(ending))

    @property
    def carrier(self) -> dict[str, str]:
        """The trace context the job carries (its submit's)."""
        return tracing.carrier_of(self.record)

    def _take_started(self) -> list[bytes]:
        started, self._pending_started = self._pending_started, None
        return [started] if started is not None else []

    def _flush_started(self) -> None:
        if self._pending_started is not None and not self._closed:
            self._queue_events([]).add_done_callback(_retrieve)

    @property
    def try_number(self) -> int:
        return self.claimed.try_number

    async def _execute(self) -> Ending:
        context = TaskContext(self.task_id, self.try_number, self, self.spec.name)
        timeout = asyncio.timeout(self.timeout_seconds)
        try:
            params = self.spec.parse(self.record.params)
            async with timeout:
                if self.spec.is_async:
                    result = await self.spec.fn(context, **params)
                else:
                    # In the task's thread, the context of this run (its span) is current too.
                    call = functools.partial(contextvars.copy_context().run, self.spec.fn, context, **params)
                    result = await asyncio.wrap_future(self.engine.threads.run((self.task_id, self.spec.name), call))
            if self._overran(timeout):
                # It blocked the event loop past its deadline, so the timeout could not interrupt it: it still
                # ran longer than allowed, and its result is not accepted.
                message = f"task exceeded its timeout of {self.timeout_seconds:g}s (it blocked the event loop)"
                return self._failure(outcomes.TaskTimedOut(message), timed_out=True)
            try:
                encoded = dumps(result)
            except TypeError as exc:
                raise outcomes.ResultNotSerializable(f"the task's result is not JSON: {exc}") from None
            if self.refused is not None:  # the task caught an EventTooLarge and went on: its try still fails
                return self._failure(self.refused, timed_out=False)
            try:
                check_result(encoded, self.engine.settings.max_result_bytes)
            except OutputTooLarge as exc:
                return self._failure(self._refuse(exc), timed_out=False)
            return outcomes.succeeded(result)
        except asyncio.CancelledError:
            self._stopping = True
            return self._cancelled_ending()
        except TimeoutError as exc:
            self._stopping = True
            if not timeout.expired():
                return self._failure(exc, timed_out=False)
            message = f"task exceeded its timeout of {self.timeout_seconds:g}s"
            return self._failure(outcomes.TaskTimedOut(message), timed_out=True)
        except Retry as exc:
            return self._retry_requested(exc)
        except InvalidArguments as exc:
            return outcomes.failed(exc, f"the stored arguments no longer fit the task: {exc.errors}")
        except Exception as exc:
            return self._failure(exc, timed_out=False)

    def _refuse(self, exc: OutputTooLarge) -> OutputTooLarge:
        """An output over its limit: say so (metrics, log) and remember it, so the try fails even if the task
        catches the error. Called from the task's thread too (a plain ``def`` task)."""
        if self.refused is None:
            self.refused = exc
        self.engine.metrics.output_refused(self.spec.name, exc.kind)
        logger.warning("task %s %s try=%d: %s", self.task_id, self.spec.name, self.try_number, exc)
        return exc

    def _overran(self, timeout: asyncio.Timeout) -> bool:
        deadline = timeout.when()
        return deadline is not None and self._loop.time() > deadline

    def _cancelled_ending(self) -> Ending:
        if self.abort_requested:
            return outcomes.aborted("aborted while running")
        if self.lease_lost:
            return Ending(TaskState.UNKNOWN, reason="lease lost")
        current = asyncio.current_task()
        cancelled_from_outside = current is not None and current.cancelling() > 0
        if self.engine.shutting_down and cancelled_from_outside:
            return outcomes.requeued("worker shutdown", give_back_try=True)
        # Relay did not ask for this cancel (most often the task's own code: a cancelled future or inner task
        # it awaited). A give-back re-queue would run it again and again, so it fails like any other error.
        if cancelled_from_outside:
            message = "the task's run was cancelled by something other than Relay (no abort or shutdown)"
        else:
            message = "the task's own code was cancelled (a future or task it awaited was cancelled)"
        logger.warning("task %s: %s", self.task_id, message)
        return self._failure(asyncio.CancelledError(message), timed_out=False)

    def _tries(self) -> tries.TryCount:
        return tries.count(self.record, self.try_number, self.spec.retry.max_retries, self.engine.settings.max_pickups)

    def _failure(self, exc: BaseException, timed_out: bool) -> Ending:
        """The try failed with ``exc``: a traceback from the task's own code goes to the log (ERROR, always) and
        into the stored error (unless ``RELAY_ERROR_TRACEBACKS=false``)."""
        trace = task_traceback(exc, self.spec.fn)
        if trace is not None:
            logger.error("task %s %s try=%d raised %s:\n%s", self.task_id, self.spec.name, self.try_number,
                         type(exc).__name__, trace.rstrip("\n"))  # fmt: skip
        stored = trace if self.engine.settings.error_tracebacks else None
        return outcomes.decide_failure(exc, timed_out, self.spec.retry, self.record, self._tries(), stored)

    def _retry_requested(self, exc: Retry) -> Ending:
        """arq's ``Retry`` raised by a task: a retry unless this try is the last (``worker.engine.tries``),
        never a silent re-queue."""
        count = self._tries()
        message = "the task asked to be retried"
        if count.last:
            return outcomes.failed(outcomes.TriesExhausted(f"{message}, but it has used its {count.cap} tries"))
        delay = (exc.defer_score or 0) / 1000 if exc.defer_score else self.spec.retry.delay(self.record.failures + 1)
        error = {"error_type": "Retry", "message": message}
        return Ending(TaskState.RETRYING, error, delay_seconds=delay)

    def _facts(self) -> RunFacts:
        return RunFacts(
            self.task_id,
            self.engine.token,
            self.engine.settings.queue_name,
            self.try_number,
            self.started_ms,
            self.record,
            self.spec.name,
            self.trace_id,
        )

    def _commit_now(self, ending: Ending) -> tuple[Op, asyncio.Future[OpResult]] | None:
        """Queue the ending's op at once, in this turn, so it joins the batch of what this run queued last."""
        if ending.state is TaskState.UNKNOWN:
            return None
        op = outcomes.op_for(ending, self._facts(), self.seq, self._take_started())
        return op, self.engine.committer.queue(op)

    async def _commit(self, ending: Ending, queued: tuple[Op, asyncio.Future[OpResult]] | None) -> None:
        if queued is None:
            logger.warning(
                "task %s: another worker took it over (this worker lost its lease); not recording", self.task_id
            )
            return
        result = await self.engine.commit_ending(ending, self._facts(), self.seq, queued)
        if result is not None:
            self.seq = result.seq
            self.engine.log_end(self, ending, result)


def _span_error(ending: Ending) -> str | None:
    """A span ends in error when the try failed (and will be retried, or not)."""
    if ending.state in (TaskState.FAILED, TaskState.RETRYING) and isinstance(ending.data, dict):
        return f"{ending.data.get('error_type')}: {ending.data.get('message')}"
    return None


def _retrieve(future: asyncio.Future[None]) -> None:
    """Nobody awaits a ``started`` event: take its exception (already logged) so asyncio does not complain."""
    if not future.cancelled():
        future.exception()


async def wait_for_redis(what: str, attempt: int, exc: RedisError | OSError, until: float | None = None) -> None:
    """Back off between attempts to write an outcome while Redis is away, never past ``until`` (a
    ``time.monotonic()``, the stopping worker's deadline)."""
    delay = min(5.0, 0.2 * 2**attempt)
    if until is not None:
        delay = max(0.0, min(delay, until - time.monotonic()))
    logger.warning("could not record %s (%s); retrying in %.1fs", what, exc, delay)
    await asyncio.sleep(delay)
