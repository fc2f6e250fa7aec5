"""taskiq with taskiq-redis's list broker and Redis result backend (JSON results rather than the default
pickle): ``taskiq worker bench.peers.apps.taskiq_app:broker --workers 1 --max-async-tasks 10``."""

from __future__ import annotations

import asyncio

from taskiq import TaskiqEvents, TaskiqState
from taskiq.serializers import JSONSerializer
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from bench.peers.apps import READY, redis_url

broker = ListQueueBroker(redis_url(), queue_name="bench").with_result_backend(
    RedisAsyncResultBackend(redis_url(), serializer=JSONSerializer())
)


@broker.task(task_name="echo")
async def echo(message: str) -> dict[str, str]:
    return {"echo": message}


@broker.task(task_name="echo_await")
async def echo_await(message: str) -> dict[str, str]:
    await asyncio.sleep(0)
    return {"echo": message}


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    print(READY, flush=True)
