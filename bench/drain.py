"""Time how fast worker processes drain a pre-filled arq queue (shared by worker_throughput and scaling).

Jobs are enqueued the way ``api/submit.py`` enqueues them (``enqueue_job(task, _job_id=..., params=...)``)
into a *staging* sorted set while the workers start. Once every worker is polling, one ``RENAME`` makes
the whole backlog appear on their queue at once: the clock starts there, so neither process start-up
nor enqueue speed is counted, only the drain. It stops when ``ZCARD`` reaches 0 (arq removes a job
from the queue when it stores its result).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arq.connections import ArqRedis
from arq.constants import result_key_prefix

from bench.common import Bench, OtherLoad, RedisServer, arq_pool, cpu_seconds, wait_for_output
from bench.profiling import sampled
from shared import keys
from shared.events import FINAL_TYPE, decode_head
from tests.support.processes import BIN, ManagedProcess, relay_env

RELAY_READY = "relay worker ready"
PROFILE_SECONDS = 5  # py-spy window from the start of a profiled drain
ENQUEUE_BATCH = 200  # concurrent enqueue_job calls: each is WATCH/EXISTS/MULTI, so latency-bound alone


@dataclass(frozen=True)
class WorkerKind:
    """How to start one flavour of worker: its arq settings module and the line it prints when ready."""

    label: str
    settings_module: str
    ready_marker: str
    publishes_events: bool


RELAY = WorkerKind("relay", "worker.settings", RELAY_READY, publishes_events=True)
BATCHED = WorkerKind(
    "relay + batched events (experiment)",
    "bench.patched_worker.BatchedEventsWorker",
    RELAY_READY,
    publishes_events=True,
)
BARE = WorkerKind("bare arq", "bench.bare_settings.WorkerSettings", "bare arq worker ready", publishes_events=False)


@dataclass(frozen=True)
class DrainResult:
    """One drain: how many jobs, how long, and the CPU the workers spent doing it."""

    kind: str
    workers: int
    jobs: int
    seconds: float
    worker_cpu_seconds: float
    redis_cpu_seconds: float
    completed: int
    redis_calls: dict[str, int]
    other_cores: float  # CPU other processes on the machine used meanwhile (see bench.common.OtherLoad)

    def calls_per_job(self, command: str) -> float:
        """Redis calls of ``command`` per job during the drain (WATCH > 1 means workers raced)."""
        return self.redis_calls.get(command, 0) / self.jobs

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.seconds


async def fill(pool: ArqRedis, staging: str, jobs: int, task: str = "echo") -> list[str]:
    """Enqueue ``jobs`` jobs into ``staging`` exactly as the API would; returns their ids."""
    ids = [uuid.uuid4().hex for _ in range(jobs)]
    for start in range(0, jobs, ENQUEUE_BATCH):
        batch = ids[start : start + ENQUEUE_BATCH]
        await asyncio.gather(
            *(pool.enqueue_job(task, _job_id=i, _queue_name=staging, params={"message": "hello"}) for i in batch)
        )
    return ids


async def wait_drained(pool: ArqRedis, queue: str, timeout: float) -> float:
    """Seconds until ``queue`` is empty, polled every 2 ms (bounded by ``timeout``)."""
    start = time.perf_counter()
    while await pool.zcard(queue):
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{queue} still holds {await pool.zcard(queue)} jobs after {timeout}s")
        await asyncio.sleep(0.002)
    return time.perf_counter() - start


async def count_completed(pool: ArqRedis, ids: list[str], check_events: bool, timeout: float = 10.0) -> int:
    """Jobs with a stored result (and, for Relay, an ``end`` event last in their log)."""
    deadline = time.monotonic() + timeout
    while True:
        done = await _count_done(pool, ids, check_events)
        if done == len(ids) or time.monotonic() > deadline:
            return done
        await asyncio.sleep(0.1)  # the last jobs publish their ``end`` right after leaving the queue


async def _count_done(pool: ArqRedis, ids: list[str], check_events: bool) -> int:
    done = 0
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        async with pool.pipeline(transaction=False) as pipe:
            for i in chunk:
                pipe.exists(result_key_prefix + i)
                if check_events:
                    pipe.xrevrange(keys.events_stream(i), "+", "-", count=1)
            replies = await pipe.execute()
        step = 2 if check_events else 1
        for n in range(len(chunk)):
            has_result = bool(replies[n * step])
            ended = not check_events or _is_end(replies[n * step + 1])
            done += has_result and ended
    return done


def _is_end(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> bool:
    return bool(entries) and decode_head(entries[0][1][b"e"]).type == FINAL_TYPE


def start_workers(bench: Bench, kind: WorkerKind, env: dict[str, str], count: int) -> list[ManagedProcess]:
    """``count`` worker processes of ``kind`` on ``env``'s queue, each polling before this returns."""
    procs = [
        bench.own(
            ManagedProcess(
                f"{kind.settings_module.rsplit('.', 1)[-1]}-{n}",
                [str(BIN / "arq"), kind.settings_module],
                env,
                bench.log_dir,
            )
        )
        for n in range(count)
    ]
    for proc in procs:
        wait_for_output(proc, kind.ready_marker, 30)
    return procs


async def drain(
    bench: Bench,
    redis: RedisServer,
    kind: WorkerKind,
    jobs: int,
    workers: int = 1,
    settings: dict[str, str] | None = None,
    timeout: float = 600.0,
    profile: Path | None = None,
) -> DrainResult:
    """Fill a fresh queue, start ``workers`` processes of ``kind`` on it, time the drain, stop them."""
    queue = f"bench:{kind.settings_module}:{uuid.uuid4().hex[:8]}"
    env = relay_env(redis.url, RELAY_QUEUE_NAME=queue, **(settings or {}))
    pool = arq_pool(redis.url)
    try:
        ids = await fill(pool, queue + ":staging", jobs)
        procs = start_workers(bench, kind, env, workers)
        cpu_before, redis_before = _total(procs, cpu_seconds), cpu_seconds(redis.pid)
        await pool.config_resetstat()
        others = OtherLoad()
        with sampled(procs[0].pid, PROFILE_SECONDS, profile) if profile else contextlib.nullcontext():
            await pool.rename(queue + ":staging", queue)
            seconds = await wait_drained(pool, queue, timeout)
        other_cores = others.cores()
        cpu, redis_cpu = _total(procs, cpu_seconds) - cpu_before, cpu_seconds(redis.pid) - redis_before
        calls = await command_calls(pool)
        completed = await count_completed(pool, ids, kind.publishes_events)
        for proc in procs:
            proc.stop()
        await pool.flushdb()  # the next drain starts from an empty Redis, whatever this one left
        return DrainResult(kind.label, workers, jobs, seconds, cpu, redis_cpu, completed, calls, other_cores)
    finally:
        await pool.aclose(close_connection_pool=True)


async def command_calls(pool: ArqRedis) -> dict[str, int]:
    """Calls per Redis command since the last ``CONFIG RESETSTAT`` (from ``INFO commandstats``)."""
    stats = await pool.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def _total(procs: list[ManagedProcess], reading: Callable[[int], float]) -> float:
    return sum(reading(p.pid) for p in procs)
