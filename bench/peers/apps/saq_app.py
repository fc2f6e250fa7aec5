"""SAQ at its defaults, concurrency 10: ``saq bench.peers.apps.saq_app.settings``."""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Queue

from bench.peers.apps import READY, redis_url
from bench.peers.saq_adapter import QUEUE_NAME


async def echo(ctx: dict[str, Any], *, message: str) -> dict[str, str]:
    return {"echo": message}


async def echo_await(ctx: dict[str, Any], *, message: str) -> dict[str, str]:
    await asyncio.sleep(0)
    return {"echo": message}


async def startup(ctx: dict[str, Any]) -> None:
    print(READY, flush=True)


settings = {
    "queue": Queue.from_url(redis_url(), name=QUEUE_NAME),
    "functions": [echo, echo_await],
    "concurrency": 10,
    "startup": startup,
}
