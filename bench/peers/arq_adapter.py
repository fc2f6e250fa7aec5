"""Bare arq 0.28 in the peers benchmark (Relay's virtualenv): native ``enqueue_job`` and ``Job.result``.

Two worker profiles: ``tuned`` (poll 0.01 s, results polled every 2 ms: the summary row) and arq's
``defaults`` (poll 0.5 s, results polled every 0.5 s).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import deserialize_result
from redis.asyncio import ConnectionPool

from bench.peers.apps import READY
from bench.peers.client import AsyncClient, Target
from bench.peers.spec import EVERYTHING, EXPECTED_RESULT, IDLE, ROUND_TRIP, Profile, Ready, System, Variant, process_env
from shared.serialization import dumps, loads

PRELOAD_BATCH = 200
TUNED = Variant("tuned", "worker poll 0.01 s, `job.result(poll_delay=0.002)`")
DEFAULTS = Variant("defaults", "worker poll 0.5 s, `job.result()` polls every 0.5 s", short=True)
RESULT_POLL = {TUNED.name: 0.002, DEFAULTS.name: 0.5}


SYSTEM = System(
    name="arq",
    label="bare arq, poll 0.01 s",
    venv="relay",
    adapter=__name__,
    worker_argv=lambda bin_: [str(bin_ / "arq"), "bench.peers.apps.arq_app.WorkerSettings"],
    worker_env=process_env,
    ready=Ready(marker=READY),
    probe=lambda ref: ("EXISTS", result_key_prefix + ref),
    done=lambda reply: bool(reply),
    profiles=(
        Profile("tuned", {"BENCH_ARQ_POLL_DELAY": "0.01"}, EVERYTHING, (TUNED,), load_variant=TUNED.name),
        Profile("defaults", {"BENCH_ARQ_POLL_DELAY": "0.5"}, frozenset({IDLE, ROUND_TRIP}), (DEFAULTS,)),
    ),
    note="arq defaults except poll 0.01 s and JSON (not pickle); no events",
    scaling=True,
)


class Client(AsyncClient):
    def __init__(self, target: Target) -> None:
        self.pool = ArqRedis(
            connection_pool=ConnectionPool.from_url(target.redis_url), job_serializer=dumps, job_deserializer=loads
        )

    async def open(self) -> None:
        await self.pool.ping()

    async def close(self) -> None:
        await self.pool.aclose(close_connection_pool=True)

    async def preload(self, n: int, task: str) -> list[str]:
        ids: list[str] = []
        for start in range(0, n, PRELOAD_BATCH):
            batch = [uuid.uuid4().hex for _ in range(start, min(n, start + PRELOAD_BATCH))]
            await asyncio.gather(*(self.pool.enqueue_job(task, message="hello", _job_id=i) for i in batch))
            ids += batch
        return ids

    async def verify(self, refs: list[str]) -> tuple[int, list[str]]:
        good, bad = 0, []
        for start in range(0, len(refs), 1000):
            chunk = refs[start : start + 1000]
            raws = await self.pool.mget([result_key_prefix + ref for ref in chunk])
            for ref, raw in zip(chunk, raws, strict=True):
                result = deserialize_result(raw, deserializer=loads) if raw else None
                if result and result.success and result.result == EXPECTED_RESULT:
                    good += 1
                else:
                    bad.append(ref)
        return good, bad[:5]

    async def submit_and_wait(self, variant: str) -> float:
        start = time.perf_counter()
        job = await self.pool.enqueue_job("echo", message="hello")
        if job is None:
            raise RuntimeError("arq refused the enqueue (job id exists)")
        result = await job.result(timeout=30, poll_delay=RESULT_POLL[variant])
        elapsed = time.perf_counter() - start
        if result != EXPECTED_RESULT:
            raise RuntimeError(f"unexpected result {result!r}")
        return elapsed
