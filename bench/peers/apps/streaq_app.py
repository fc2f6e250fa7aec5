"""streaq at its defaults except concurrency 10 (its default is 16) and JSON (not pickle):
``streaq run bench.peers.apps.streaq_app:worker``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from streaq import Worker

from bench.peers.apps import READY, redis_url
from bench.peers.streaq_adapter import QUEUE_NAME


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    print(READY, flush=True)  # the runner also waits for its consumer to block in XREADGROUP
    yield


worker: Worker[None] = Worker(
    redis_url=redis_url(),
    queue_name=QUEUE_NAME,
    concurrency=10,
    lifespan=lifespan,
    serializer=partial(json.dumps, default=repr),  # a failed task's exception is stored as its repr
    deserializer=json.loads,
)


@worker.task(name="echo")
async def echo(message: str) -> dict[str, str]:
    return {"echo": message}


@worker.task(name="echo_await")
async def echo_await(message: str) -> dict[str, str]:
    await asyncio.sleep(0)
    return {"echo": message}


@worker.task(name="step")
async def step(value: int) -> int:
    """One step of a chain: ``step.enqueue(0) | step | ...`` passes each result into the next."""
    return value + 1
