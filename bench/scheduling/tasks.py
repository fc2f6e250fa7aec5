"""The tasks ``bench.scheduling`` runs (its workers load this module: ``RELAY_TASK_MODULES=bench.scheduling.tasks``).

Each returns when it started and ended (``time.time()``: the bench and its workers share one host's clock) and in
which process, so every measurement is made from the results alone; ``three_at_once`` also counts its running
copies across processes in Redis (``INCR`` at its start, ``DECR`` at its end) and returns the count it saw.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated

from pydantic import Field
from redis.asyncio import Redis

from shared.lanes import Limit, Rate
from worker.context import TaskContext
from worker.tasks import registry

QUEUES = ("default", "q1", "q2", "q3")  # the drain's named queues: `default` alone, or q1-q3 with priorities
CONCURRENCY = 3
RATE = 50
RUNNING_KEY = "bench:three-at-once:running"  # not under relay:, so nothing of Relay's ever reads it

Seconds = Annotated[float, Field(ge=0, le=60)]
_redis: Redis | None = None


def _ran(started: float) -> dict[str, float | int]:
    return {"pid": os.getpid(), "started": started, "ended": time.time()}


def _counter() -> Redis:
    """This process's connection for the running count (the worker's own Redis)."""
    global _redis
    if _redis is None:
        _redis = Redis.from_url(os.environ["RELAY_REDIS_URL"])
    return _redis


@registry.task(queue="default", queues=QUEUES)
async def noop(task: TaskContext) -> int:
    """Nothing: the drain measures the queue's own cost per job."""
    return 0


@registry.task()
async def pause(task: TaskContext, seconds: Seconds = 0.005) -> dict[str, float | int]:
    """Sleep ``seconds`` (the backlog's and the measured jobs' work in the priority and fairness parts)."""
    started = time.time()
    await asyncio.sleep(seconds)
    return _ran(started)


@registry.task(concurrency=Limit(CONCURRENCY))
async def three_at_once(task: TaskContext, seconds: Seconds = 0.05) -> dict[str, float | int]:
    """At most three running across all workers; returns how many it saw running, itself included."""
    counter = _counter()
    started = time.time()
    running = int(await counter.incr(RUNNING_KEY))
    try:
        await asyncio.sleep(seconds)
    finally:
        await counter.decr(RUNNING_KEY)
    return _ran(started) | {"running": running}


@registry.task(rate=Rate(RATE, per_seconds=1))
async def fifty_per_second(task: TaskContext) -> dict[str, float | int]:
    """At most fifty starts a second across all workers (spaced evenly: no burst)."""
    return _ran(time.time())
