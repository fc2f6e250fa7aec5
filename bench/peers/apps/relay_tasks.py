"""The tasks Relay's worker runs for the drain that awaits once and for the chain workload (``RELAY_TASK_MODULES``
adds this module to the demo tasks, whose ``echo`` is the no-op drain's task)."""

from __future__ import annotations

import asyncio

from worker.context import TaskContext
from worker.tasks import registry


@registry.task()
async def echo_await(task: TaskContext, message: str = "hello") -> dict[str, str]:
    """Yield to the event loop once, then return the message."""
    await asyncio.sleep(0)
    return {"echo": message}


@registry.task()
async def step(task: TaskContext, value: int) -> int:
    """One step of a chain: takes the value before it (its first positional argument) and adds 1."""
    return value + 1
