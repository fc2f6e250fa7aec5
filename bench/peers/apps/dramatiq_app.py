"""Dramatiq with its Redis broker and Redis results backend, defaults otherwise:
``dramatiq bench.peers.apps.dramatiq_app:broker --processes 1 --threads 10``. The ``AsyncIO`` middleware lets
``echo_await`` be an async actor (Dramatiq runs it on one event loop thread, its worker thread waiting)."""

from __future__ import annotations

import asyncio
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from bench.peers.apps import READY, redis_url
from bench.peers.dramatiq_adapter import QUEUE_NAME


class Announce(dramatiq.Middleware):
    """Prints the ready line once the worker's consumer and worker threads run."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        print(READY, flush=True)


backend = RedisBackend(url=redis_url())
broker = RedisBroker(url=redis_url())
broker.add_middleware(Results(backend=backend))
broker.add_middleware(AsyncIO())
broker.add_middleware(Announce())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="echo", queue_name=QUEUE_NAME, store_results=True)
def echo(message: str) -> dict[str, str]:
    return {"echo": message}


@dramatiq.actor(actor_name="echo_await", queue_name=QUEUE_NAME, store_results=True)
async def echo_await(message: str) -> dict[str, str]:
    await asyncio.sleep(0)
    return {"echo": message}


@dramatiq.actor(actor_name="step", queue_name=QUEUE_NAME, store_results=True)
def step(value: int) -> int:
    """One step of a chain: ``pipeline([step.message(0), step.message(), ...])`` appends each result to the next's
    arguments (results stored for every step, as for ``echo``: the client reads the last one's)."""
    return value + 1
