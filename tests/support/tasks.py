"""Tasks that only the test suite registers (``RELAY_TASK_MODULES=...,tests.support.tasks``): each misbehaves in
one way a real task can, so tests can watch Relay cope."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Annotated, Any

from arq.worker import Retry
from pydantic import Field

from shared.lanes import Limit, Rate
from shared.retry import RetryPolicy
from worker.context import ChildFailed, TaskContext
from worker.outputs import EventTooLarge, OutputTooLarge
from worker.tasks import registry


class Flaky(RuntimeError):
    """A failure the retry policies below retry."""


class NotRetried(RuntimeError):
    """A failure no policy retries."""


QUICK_RETRIES = RetryPolicy(max_retries=3, backoff_seconds=0.2, backoff_max_seconds=1.0, retry_on=(Flaky,))


@registry.task(retry=QUICK_RETRIES)
async def flaky(task: TaskContext, failures: Annotated[int, Field(ge=0, le=10)] = 2) -> dict[str, int]:
    """Fail on the first ``failures`` tries, then succeed."""
    if task.try_number <= failures:
        raise Flaky(f"failing on try {task.try_number}")
    return {"succeeded_on_try": task.try_number}


@registry.task(retry=RetryPolicy(max_retries=3, backoff_seconds=2.0, backoff_max_seconds=4.0, retry_on=(Flaky,)))
async def always_flaky(task: TaskContext) -> None:
    """Always fail with a retried error (jitter spreads the retries of many at once)."""
    raise Flaky("always")


# No jitter: a draw from [0, 60] s could be a few milliseconds, and the retry would run before anyone looked.
@registry.task(retry=RetryPolicy(max_retries=2, backoff_seconds=60.0, jitter=False, retry_on=(Flaky,)))
async def flaky_slow_backoff(task: TaskContext) -> None:
    """Fail, then wait a minute before the retry: long enough to look at, and to abort."""
    raise Flaky("waiting a minute before trying again")


@registry.task(retry=QUICK_RETRIES)
async def wrong_failure(task: TaskContext) -> None:
    """Fail with an error the task's policy does not retry."""
    raise NotRetried("not one the policy retries")


@registry.task(retry=QUICK_RETRIES)
async def times_out(task: TaskContext, seconds: float = 5.0) -> None:
    """Sleep past any timeout a test gives it (the policy does not retry timeouts)."""
    await asyncio.sleep(seconds)


@registry.task(timeout_seconds=0.5, retry=RetryPolicy(max_retries=1, backoff_seconds=0.1, retry_on_timeout=True))
async def times_out_retried(task: TaskContext, seconds: float = 5.0) -> None:
    """Sleep past its own registered timeout (0.5 s), which its policy retries once."""
    await asyncio.sleep(seconds)


@registry.task()
async def asks_retry(task: TaskContext, times: int = 1) -> dict[str, int]:
    """Raise arq's ``Retry`` on the first ``times`` tries."""
    if task.try_number <= times:
        raise Retry(defer=0.1)
    return {"try": task.try_number}


@registry.task(retry=QUICK_RETRIES)
async def asks_retry_always(task: TaskContext) -> None:
    """Raise arq's ``Retry`` on every try, under the same policy as ``flaky``."""
    raise Retry(defer=0.1)


@registry.task()
async def cancels_itself(task: TaskContext, how: str = "future") -> None:
    """Its own code raises ``CancelledError`` (a cancelled future it awaits, or a cancelled inner gather): a
    failure of the task, nothing Relay asked for."""
    loop = asyncio.get_running_loop()
    if how == "gather":
        inner = asyncio.gather(asyncio.sleep(3600))
        loop.call_soon(inner.cancel)
        await inner
    future: asyncio.Future[None] = loop.create_future()
    future.cancel()
    await future


@registry.task(timeout_seconds=2)
async def blocks_loop(task: TaskContext, seconds: float = 3.0) -> dict[str, float]:
    """Block the worker's event loop (a ``time.sleep`` in an ``async def``: the mistake Relay warns about)."""
    time.sleep(seconds)  # noqa: ASYNC251  (on purpose)
    return {"blocked": seconds}


@registry.task()
async def blocks_loop_untimed(task: TaskContext, seconds: float = 3.0) -> dict[str, float]:
    """Block the event loop, within the default timeout."""
    time.sleep(seconds)  # noqa: ASYNC251  (on purpose)
    return {"blocked": seconds}


@registry.task()
def sync_steps(task: TaskContext, seconds: float = 1.0, steps: int = 4) -> dict[str, float]:
    """A plain ``def`` task: runs in the worker's thread pool, reports progress from there."""
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        task.progress(step, steps, f"step {step}")
        if task.cancelled:
            return {"stopped_at": step}
    return {"slept": seconds}


@registry.task()
def sync_until_cancelled(task: TaskContext, noticed: str, seconds: float = 30.0) -> str:
    """A plain ``def`` task that works in small steps until it sees ``task.cancelled``, then writes the file
    ``noticed`` and returns: what a test can watch after the run itself has ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if task.cancelled:
            with open(noticed, "w") as out:
                out.write(f"{task.id} noticed task.cancelled\n")
            return "stopped"
        time.sleep(0.05)
    return "never told"


@registry.task()
def sync_slow_first(task: TaskContext, marker: str, seconds: float = 40.0, steps: int = 4) -> str:
    """A plain ``def`` task that ignores ``task.cancelled`` (as many do): the first run (the file ``marker`` is
    not there yet) sleeps ``seconds`` in ``steps`` with progress between; any later run returns at once."""
    if os.path.exists(marker):
        return "ran again"
    with open(marker, "w") as out:
        out.write(task.id)
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        task.progress(step, steps)
    return "ran to the end"


@registry.task()
def sync_add(task: TaskContext, a: int, b: int) -> int:
    """A plain ``def`` task that returns at once."""
    return a + b


@registry.task()
async def kills_worker(task: TaskContext) -> None:
    """Kill the worker running it, as an out-of-memory kill would."""
    os.kill(os.getpid(), signal.SIGKILL)


@registry.task(retry=QUICK_RETRIES)
async def kills_worker_retried(task: TaskContext) -> None:
    """``kills_worker`` under the same policy as ``flaky``."""
    os.kill(os.getpid(), signal.SIGKILL)


@registry.task()
async def hangs_first_try(task: TaskContext, steps: int = 1) -> dict[str, int]:
    """Hang on its first try (until its worker is killed), then report ``steps`` progress events and succeed:
    a crash-recovery test can kill the first try's worker whenever it likes, with no race against the task's
    own end."""
    if task.try_number == 1:
        await asyncio.sleep(3600)
    for step in range(1, steps + 1):
        await task.progress(step, steps)
    return {"tries": task.try_number}


@registry.task()
async def sleeps(task: TaskContext, seconds: float = 30.0) -> dict[str, float]:
    """Sleep quietly (no events) for ``seconds``."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@registry.task()
async def not_json(task: TaskContext) -> object:
    """Return something that is not JSON."""
    return object()


@registry.task()
async def chatty_then_quiet(task: TaskContext, events: int = 3, quiet: float = 3.0) -> str:
    """Publish some events, go quiet for ``quiet`` seconds, then publish one more and end."""
    for i in range(events):
        await task.progress(i + 1, events + 1)
    await asyncio.sleep(quiet)
    await task.progress(events + 1, events + 1)
    return "done"


@registry.task()
async def traced(task: TaskContext) -> str:
    """Open a span of its own: with OpenTelemetry set up, a child of the worker's span of this try."""
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("inside an async task") as span:
        return format(span.get_span_context().trace_id, "032x")


@registry.task()
def traced_sync(task: TaskContext) -> str:
    """The same from a plain ``def`` task (it runs in a worker thread)."""
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("inside a plain task") as span:
        return format(span.get_span_context().trace_id, "032x")


# Tasks that put too much into Redis (RELAY_MAX_RESULT_BYTES, RELAY_MAX_EVENT_BYTES): their policy retries
# the refusal once, so a test sees the retry and then the final failure.
OVERSIZE_RETRIED = RetryPolicy(max_retries=1, backoff_seconds=0.1, backoff_max_seconds=0.1, retry_on=(OutputTooLarge,))


@registry.task(retry=OVERSIZE_RETRIED)
async def big_result(task: TaskContext, size_bytes: int) -> str:
    """Return a string of ``size_bytes`` characters."""
    return "x" * size_bytes


@registry.task(retry=OVERSIZE_RETRIED)
async def big_partials(task: TaskContext, size_bytes: int, count: int = 1) -> str:
    """Emit ``count`` partials of ``size_bytes`` characters each, then return."""
    for _ in range(count):
        await task.partial("x" * size_bytes)
    return "done"


@registry.task(retry=OVERSIZE_RETRIED)
async def big_progress(task: TaskContext, size_bytes: int) -> str:
    """Report progress with a message of ``size_bytes`` characters."""
    await task.progress(1, 1, "x" * size_bytes)
    return "done"


@registry.task(retry=OVERSIZE_RETRIED)
def big_sync(task: TaskContext, what: str, size_bytes: int) -> str:
    """A plain ``def`` task that returns, or emits as a partial, ``size_bytes`` characters."""
    if what == "partial":
        task.partial("x" * size_bytes)
    return "x" * size_bytes if what == "result" else "done"


@registry.task()
async def swallows_big_event(task: TaskContext, size_bytes: int) -> str:
    """Catch the refusal of an oversized partial and carry on as if nothing happened."""
    with contextlib.suppress(EventTooLarge):
        await task.partial("x" * size_bytes)
    return "carried on"


# Tasks that raise from their own code, for the tracebacks of failed tasks (issue #24).
def _divide(x: int) -> float:
    return 1 / x


@registry.task()
async def explode(task: TaskContext, x: int = 0) -> float:
    """Divide by ``x`` in a helper: with 0, a ZeroDivisionError two frames deep in the task's own code."""
    return _divide(x)


@registry.task()
def explode_sync(task: TaskContext, x: int = 0) -> float:
    """The same in a plain ``def`` task (it runs in a worker thread)."""
    return _divide(x)


@registry.task(
    retry=RetryPolicy(max_retries=1, backoff_seconds=0.1, backoff_max_seconds=0.1, retry_on=(ZeroDivisionError,))
)
async def explode_retried(task: TaskContext, x: int = 0) -> float:
    """The same, retried once by its policy."""
    return _divide(x)


@registry.task()
async def explodes_at_length(task: TaskContext, size: int) -> None:
    """Raise with a message of ``size`` characters: a traceback that long must be cut."""
    raise RuntimeError("x" * size)


# Routing and limits (issue #21): each reports when it ran and where, so a test can check who ran it, the order
# jobs started in and how many overlapped, from the results alone (times on the worker's clock: one test host).
def _ran(started: float) -> dict[str, float | int]:
    return {"pid": os.getpid(), "started": started, "ended": time.time()}


@registry.task(queue="gpu", queues=("gpu", "gpu-spot"))
async def render(task: TaskContext, seconds: float = 0.0) -> dict[str, float | int]:
    """A task of the `gpu` queue (or `gpu-spot`, if a submit asks)."""
    started = time.time()
    await asyncio.sleep(seconds)
    return _ran(started)


@registry.task()
async def stamp(task: TaskContext, seconds: float = 0.0) -> dict[str, float | int]:
    """Record when it started (for priority order), after sleeping ``seconds``."""
    started = time.time()
    await asyncio.sleep(seconds)
    return _ran(started)


@registry.task(concurrency=Limit(2, key="customer_id"))
async def per_customer(task: TaskContext, customer_id: str, seconds: float = 0.3) -> dict[str, float | int]:
    """At most two running per customer, across all workers."""
    started = time.time()
    await asyncio.sleep(seconds)
    return _ran(started)


@registry.task(concurrency=1)
async def one_at_a_time(
    task: TaskContext, seconds: float = 0.3, retry_seconds: float | None = None
) -> dict[str, float | int]:
    """At most one running, across all workers. With ``retry_seconds``, tries after the first sleep that long
    instead: a test can hold the slot with a first try that outlasts it (until its worker is killed) and not wait
    for a re-run just as long."""
    started = time.time()
    await asyncio.sleep(seconds if retry_seconds is None or task.try_number == 1 else retry_seconds)
    return _ran(started)


@registry.task(rate=Rate(5, per_seconds=1.0))
async def five_per_second(task: TaskContext) -> dict[str, float | int]:
    """At most five starts a second, across all workers."""
    return _ran(time.time())


# Workflows and child tasks (issue #23).
@registry.task()
async def inc(task: TaskContext, x: int = 0, seconds: float = 0.0) -> int:
    """Return ``x + 1`` (after ``seconds``): a chain of n of them from 0 ends at n."""
    if seconds:
        await asyncio.sleep(seconds)
    return x + 1


@registry.task()
async def collect(task: TaskContext, values: list[Any]) -> list[Any]:
    """Return what it was given (a chord's callback that shows its input)."""
    return values


@registry.task()
async def fails_until(task: TaskContext, x: Any = None, marker: str = "") -> Any:
    """Fail (no retry) until the file ``marker`` exists, then pass ``x`` on: a step a test lets succeed later."""
    if not os.path.exists(marker):  # noqa: ASYNC240  (a stat of a local file, in a test task)
        raise NotRetried(f"{marker} does not exist yet")
    return x


@registry.task()
async def chatty(task: TaskContext, x: Any = None, events: int = 3, interval: float = 0.05) -> Any:
    """Report ``events`` progress events ``interval`` apart, then pass ``x`` on."""
    for i in range(events):
        await task.progress(i + 1, events)
        await asyncio.sleep(interval)
    return x


@registry.task()
async def parent_of(task: TaskContext, n: int = 2, child: str = "inc", seconds: float = 0.0) -> list[Any]:
    """Submit ``n`` children (``child(i)``), wait for them, return their results."""
    await asyncio.sleep(seconds)
    ids = [await task.submit(child, i) for i in range(n)]
    return await task.wait(*ids)


@registry.task()
async def fans_out(task: TaskContext, n: int = 2, depth: int = 1, seconds: float = 60.0, wait: bool = True) -> Any:
    """Submit ``n`` children: ``fans_out`` one level down while ``depth`` > 1, else ``sleeps(seconds)`` (they block
    until aborted); wait for them, or with ``wait`` false return their ids at once (leaving them running)."""
    if depth > 1:
        ids = [await task.submit("fans_out", n, depth - 1, seconds, wait) for _ in range(n)]
    else:
        ids = [await task.submit("sleeps", seconds) for _ in range(n)]
    return await task.wait(*ids) if wait else ids


@registry.task()
async def parent_of_failure(task: TaskContext) -> str:
    """Wait for a child that fails, and say what the parent was told."""
    child = await task.submit("fail", "the child failed")
    try:
        await task.wait(child)
    except ChildFailed as exc:
        return f"{exc.task_id} {exc.state}: {exc.error['error_type']}"
    return "not told"
