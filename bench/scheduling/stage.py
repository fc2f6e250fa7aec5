"""One part's processes and the Redis-side helpers every part uses: a private redis-server, optionally an API,
N workers running ``bench.scheduling.tasks``, preloads through Relay's own enqueue path, results read back.

Every process is started through ``bench.harness.processes`` and stopped by its PID when the part's
``bench_scope`` ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import redis
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from bench.common import CLOCK_TICKS, Bench, RedisServer, bench_scope, start_api_factory
from bench.harness.processes import ManagedProcess, free_port, relay_env, start_worker, wait_until
from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.jobs import ResultRecord
from shared.serialization import dumps, loads
from shared.settings import Settings
from shared.tasks import TaskSubmission
from worker.tasks import load

TASK_MODULE = "bench.scheduling.tasks"
QUEUE_NAME = "relay:queue"
MAX_QUEUE_DEPTH = 1_000_000  # backlogs beyond RELAY_MAX_QUEUE_DEPTH's 10,000 (the depth check still runs)
PRELOAD_BATCH = 500  # concurrent enqueues: the enqueuer packs them into script calls of up to 128

registry = load([TASK_MODULE])


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (what `uptime` prints)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def plural(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun that goes with it."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_seconds() -> float:
    """CPU time of this process and of every process it started and reaped (the parts' servers, APIs and
    workers, stopped and waited for by PID, and anything they started and reaped in turn)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Conditions:
    """What a part ran under, said next to its numbers: the load averages, and the CPU other processes used
    meanwhile (the machine's busy time from /proc/stat minus this bench's own and its children's; read once
    the part's processes are stopped and reaped). ``bench.common.OtherLoad`` misses processes that start and
    end within the window, as another session's test suite does all the time."""

    load_before: str = field(default_factory=loadavg)
    load_after: str = ""
    other_cores: float = 0.0
    _began: float = field(default_factory=time.monotonic, repr=False)
    _machine: float = field(default_factory=machine_busy_seconds, repr=False)
    _own: float = field(default_factory=own_seconds, repr=False)

    def close(self) -> Conditions:
        self.load_after = loadavg()
        used = machine_busy_seconds() - self._machine - (own_seconds() - self._own)
        self.other_cores = max(0.0, used) / max(time.monotonic() - self._began, 1e-9)
        return self

    def line(self) -> str:
        return (
            f"Machine: 2 cores shared with other sessions; load average (1/5/15 min) {self.load_before} before,"
            f" {self.load_after} after; other processes used {self.other_cores:.2f} cores on average meanwhile."
        )


@dataclass
class Worker:
    proc: ManagedProcess
    metrics_port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pause(self) -> None:
        """SIGSTOP: jobs preloaded meanwhile wait for the resume (the clock starts there)."""
        self.proc.send(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send(signal.SIGCONT)

    def claim_waits(self) -> dict[str, float]:
        """``relay_claim_waits_total`` by reason, scraped from this worker's metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        waits = {}
        for line in text.splitlines():
            if line.startswith("relay_claim_waits_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                waits[reason] = float(line.rsplit(" ", 1)[1])
        return waits


@dataclass
class Stage:
    """A part's running system."""

    bench: Bench
    server: RedisServer
    env: dict[str, str]
    client: redis.Redis
    workers: list[Worker] = field(default_factory=list)
    api: str | None = None

    @property
    def settings(self) -> Settings:
        return Settings(redis_url=self.server.url, queue_name=QUEUE_NAME, max_queue_depth=MAX_QUEUE_DEPTH)

    def start_workers(self, count: int, **overrides: str) -> list[Worker]:
        """``count`` workers started at once, returned once every one is ready."""
        started = []
        for _ in range(count):
            port = free_port()
            env = self.env | {"RELAY_WORKER_METRICS_PORT": str(port)} | overrides
            started.append(Worker(self.bench.own(start_worker(self.bench.log_dir, env, wait_ready=False)), port))
        for worker in started:
            wait_until(lambda w=worker: _ready(w.proc), 30, "a worker to start")  # type: ignore[misc]
        self.workers += started
        return started

    def start_api(self) -> str:
        _, self.api = start_api_factory(self.bench, self.env)
        return self.api

    def waiting(self) -> int:
        """Jobs waiting in every named queue (the depth counts the scripts keep)."""
        return sum(int(v) for v in cast(list[bytes], self.client.hvals(keys.depth(QUEUE_NAME))))

    def wait_drained(self, timeout: float, interval: float = 0.005) -> float:
        """Block until nothing waits or runs; returns ``time.perf_counter()`` when that was first seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pipe = self.client.pipeline(transaction=False)
            pipe.hvals(keys.depth(QUEUE_NAME))
            pipe.zcount(QUEUE_NAME, keys.RUNNING_BASE, "+inf")
            depths, running = pipe.execute()
            if not running and not any(int(v) for v in depths):
                return time.perf_counter()
            time.sleep(interval)
        raise TimeoutError(f"jobs still waiting or running after {timeout} s")

    def wait_ended(self, ids: list[str], timeout: float) -> None:
        """Block until every task of ``ids`` has a result."""

        def ended() -> bool:
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(ids), 1000):
                pipe.exists(*[keys.result(task_id) for task_id in ids[start : start + 1000]])
            return sum(cast(list[int], pipe.execute())) == len(ids)

        wait_until(ended, timeout, f"{len(ids)} tasks to end", interval=0.02)

    def commands(self) -> dict[str, int]:
        """Calls so far per command (INFO commandstats; the INFO calls that read it left out)."""
        stats = cast(dict[str, Any], self.client.info("commandstats"))
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}

    def results(self, ids: list[str]) -> list[dict[str, Any]]:
        """Each task's result (every one must have succeeded), read from Redis in one pipeline per 1,000."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            pipe = self.client.pipeline(transaction=False)
            for task_id in chunk:
                pipe.get(keys.result(task_id))
            for task_id, raw in zip(chunk, pipe.execute(), strict=True):
                if raw is None:
                    raise RuntimeError(f"task {task_id} has no result")
                record = ResultRecord.decode(raw)
                if record.state != "succeeded":
                    raise RuntimeError(f"task {task_id} {record.state}: {record.result!r}")
                found.append(record.result if isinstance(record.result, dict) else {"result": record.result})
        return found


def _ready(proc: ManagedProcess) -> bool:
    if proc.proc.poll() is not None:
        raise RuntimeError(f"a worker exited early:\n{proc.output()[-4000:]}")
    return "relay worker ready" in proc.output()


@contextlib.contextmanager
def stage(**overrides: str) -> Iterator[Stage]:
    """A private redis-server and the environment of the part's Relay processes (started by the part)."""
    with bench_scope() as bench:
        server = bench.redis()
        env = relay_env(
            server.url,
            RELAY_TASK_MODULES=TASK_MODULE,
            RELAY_QUEUE_NAME=QUEUE_NAME,
            RELAY_MAX_QUEUE_DEPTH=str(MAX_QUEUE_DEPTH),
            **overrides,
        )
        client = redis.Redis.from_url(server.url)
        bench.stack.callback(client.close)
        yield Stage(bench, server, env, client)


@dataclass(frozen=True)
class Job:
    """One job to preload: its task, arguments and routing."""

    task: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None


class Preloader:
    """Enqueues jobs through ``shared.enqueue`` (what the API calls for a submit, with the same records, lanes
    and tenant namespaces), many at once: a backlog of 10,000 takes about a second instead of 10,000 POSTs."""

    def __init__(self, pool: ArqRedis, settings: Settings) -> None:
        self.settings = settings
        self.enqueuer = Enqueuer(pool, settings)

    async def load(self, jobs: list[Job], tenant: str | None = None) -> list[str]:
        """Enqueue ``jobs`` (due now); returns their stored ids in order."""
        prepared = [
            prepare(
                registry.get(job.task),
                self.settings,
                TaskSubmission(task=job.task, kwargs=job.kwargs, queue=job.queue, priority=job.priority,
                               id=uuid.uuid4().hex),
                tenant=tenant,
            )
            for job in jobs
        ]  # fmt: skip
        for start in range(0, len(prepared), PRELOAD_BATCH):
            await asyncio.gather(*(self.enqueuer.enqueue(p) for p in prepared[start : start + PRELOAD_BATCH]))
        return [p.task_id for p in prepared]


@contextlib.asynccontextmanager
async def preloader(stage_: Stage) -> AsyncIterator[Preloader]:
    pool = ArqRedis(connection_pool=ConnectionPool.from_url(stage_.server.url), job_serializer=dumps,
                    job_deserializer=loads)  # fmt: skip
    try:
        yield Preloader(pool, stage_.settings)
    finally:
        await pool.aclose(close_connection_pool=True)


def preload(stage_: Stage, jobs: list[Job], tenant: str | None = None) -> list[str]:
    """``Preloader.load`` from synchronous code."""

    async def run() -> list[str]:
        async with preloader(stage_) as loader:
            return await loader.load(jobs, tenant)

    return asyncio.run(run())
