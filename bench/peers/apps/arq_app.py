"""Bare arq at its defaults (concurrency 10), with the JSON serializer Relay uses instead of pickle:
``arq bench.peers.apps.arq_app.WorkerSettings``. ``BENCH_ARQ_POLL_DELAY`` sets the poll (arq's default 0.5 s)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func

from bench.peers.apps import READY, redis_url
from shared.serialization import dumps, loads


async def echo(ctx: dict[str, Any], message: str) -> dict[str, str]:
    return {"echo": message}


async def echo_await(ctx: dict[str, Any], message: str) -> dict[str, str]:
    await asyncio.sleep(0)
    return {"echo": message}


async def startup(ctx: dict[str, Any]) -> None:
    print(READY, flush=True)


class WorkerSettings:
    functions = [func(echo, name="echo"), func(echo_await, name="echo_await")]
    redis_settings = RedisSettings.from_dsn(redis_url())
    max_jobs = 10
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.5"))
    job_serializer = dumps
    job_deserializer = loads
    on_startup = startup
