"""Built-in demo tasks: each exercises one part of the machinery (instant result, progress, partials, failure)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from worker.context import TaskContext
from worker.tasks import registry


class DemoFailure(RuntimeError):
    """Raised on purpose by the ``fail`` task."""


@registry.task()
async def echo(task: TaskContext, message: str = "hello") -> dict[str, str]:
    """Return the message at once."""
    return {"echo": message}


@registry.task()
async def sleep(
    task: TaskContext,
    seconds: Annotated[float, Field(ge=0, le=3600)] = 2.0,
    steps: Annotated[int, Field(ge=1, le=1000)] = 4,
) -> dict[str, float]:
    """Sleep in ``steps`` equal parts, reporting progress after each."""
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        await task.progress(step, steps, f"slept {step}/{steps}")
    return {"slept": seconds}


@registry.task()
async def count(
    task: TaskContext,
    n: Annotated[int, Field(ge=0, le=100_000)] = 5,
    interval: Annotated[float, Field(ge=0, le=60)] = 0.1,
) -> dict[str, int]:
    """Stream ``n`` partial results, one every ``interval`` seconds, then their sum."""
    for i in range(1, n + 1):
        await task.partial({"i": i})
        if interval:
            await asyncio.sleep(interval)
    return {"count": n, "sum": n * (n + 1) // 2}


@registry.task()
async def fail(task: TaskContext, message: str = "this task always fails") -> None:
    """Raise, so clients can see what a failure looks like."""
    raise DemoFailure(message)


# For workflows (docs/workflows.md): Celery's canvas examples, `add.s(2, 2) | mul.s(4)`, a chord into `tsum`, a map
# over the list `numbers` returns.
@registry.task()
async def add(task: TaskContext, x: float, y: float = 0) -> float:
    """Return ``x + y``."""
    return x + y


@registry.task()
async def mul(task: TaskContext, x: float, y: float = 1) -> float:
    """Return ``x * y``."""
    return x * y


@registry.task()
async def tsum(task: TaskContext, numbers: list[float]) -> float:
    """Return the sum of ``numbers`` (a chord's callback: the list of its group's results)."""
    return sum(numbers)


@registry.task()
async def numbers(task: TaskContext, n: Annotated[int, Field(ge=0, le=10_000)] = 3) -> list[int]:
    """Return ``[1, ..., n]``: a list known only when the step ends, for a map over it (``numbers.s(3) |
    add.map(None, 10)``)."""
    return list(range(1, n + 1))
