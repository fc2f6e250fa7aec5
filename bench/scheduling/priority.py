"""Part 1: how soon a priority-9 submit starts while one worker drains a backlog of priority-0 jobs.

The backlog (``pause`` jobs of a few ms, priority 0) is preloaded while the worker is stopped; once it drains,
priority-9 ``pause`` jobs are POSTed one at a time at random moments (a random pause, mean ``gap_ms``, between
submits). Start latency = the job's own start time (its result's ``started``, taken as the task begins) minus
the moment its POST was sent, both on this host's clock. The backlog is topped up between submits whenever it
falls below a quarter of its size, so every measured submit meets a worker with priority-0 work due.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import httpx

from bench.common import percentile, table
from bench.scheduling.stage import Conditions, Job, Stage, plural, preloader, stage

SETTLE_SECONDS = 0.5  # after the resume, before the first measured submit: the drain is in its stride


@dataclass(frozen=True)
class Options:
    backlog: int = 10_000
    submits: int = 200
    task_ms: float = 5.0
    gap_ms: float = 30.0  # mean random pause between measured submits
    seed: int = 1


@dataclass
class Result:
    options: Options
    latencies_ms: list[float]
    min_backlog: int  # waiting jobs seen just before a measured submit, at the least
    refills: int
    backlog_rate: float  # backlog jobs run per second while the measured submits went on
    measured_seconds: float
    conditions: Conditions = field(default_factory=Conditions)

    def render(self) -> str:
        o, ms = self.options, self.latencies_ms
        row = [f"{len(ms)}", *(f"{percentile(ms, p):.1f} ms" for p in (50, 95, 99)), f"{max(ms):.1f} ms",
               f"{sum(1 for m in ms if m > 50)}", "met" if percentile(ms, 99) <= 50 else "missed"]  # fmt: skip
        head = ["priority-9 submits", "p50", "p95", "p99", "max", "over 50 ms", "target p99 <= 50 ms"]
        return "\n".join([
            "### 1. Priority: a priority-9 submit's start latency behind a priority-0 backlog",
            "",
            table(head, [row]),
            "",
            f"One worker (RELAY_WORKER_CONCURRENCY 10, the default), an API process without keys (every job of one"
            f" tenant, so priority alone orders them); backlog {o.backlog:,} `pause`"
            f" jobs of {o.task_ms:g} ms at priority 0 (topped up {plural(self.refills, 'time')}; at least"
            f" {self.min_backlog:,} waiting at every measured submit), drained at {self.backlog_rate:,.0f} jobs/s"
            f" while {len(ms)} priority-9 `pause` jobs of {o.task_ms:g} ms were POSTed one at a time, a random"
            f" 0-{2 * o.gap_ms:g} ms apart, over {self.measured_seconds:.1f} s. Latency: the job's start (its"
            " result's `started`) minus the moment its POST was sent.",
            self.conditions.line(),
        ])  # fmt: skip


def run(options: Options) -> Result:
    conditions = Conditions()
    with stage() as stage_:
        result = asyncio.run(_measure(stage_, options))
    result.conditions = conditions.close()
    return result


async def _measure(stage_: Stage, o: Options) -> Result:
    api = stage_.start_api()
    [worker] = stage_.start_workers(1)
    backlog = [Job("pause", {"seconds": o.task_ms / 1000}, priority=0)] * o.backlog
    rng = random.Random(o.seed)
    async with preloader(stage_) as loader, httpx.AsyncClient(base_url=api, timeout=30) as http:
        worker.pause()
        loaded = len(await loader.load(backlog))
        worker.resume()
        await asyncio.sleep(SETTLE_SECONDS)
        sent: list[tuple[str, float]] = []
        refills, least = 0, o.backlog
        begin, waiting_before = time.monotonic(), stage_.waiting()
        for _ in range(o.submits):
            await asyncio.sleep(rng.uniform(0, 2 * o.gap_ms) / 1000)
            waiting = stage_.waiting()
            if waiting < o.backlog // 4:
                await asyncio.sleep(0.1)  # the last measured job has started: the top-up delays none of them
                loaded += len(await loader.load(backlog[: o.backlog // 2]))
                refills += 1
                waiting = stage_.waiting()
            least = min(least, waiting)
            at = time.time()
            response = await http.post("/tasks", json={"task": "pause", "priority": 9,
                                                       "kwargs": {"seconds": o.task_ms / 1000}})  # fmt: skip
            response.raise_for_status()
            sent.append((response.json()["id"], at))
        measured = time.monotonic() - begin
        # Backlog jobs run meanwhile: those waiting at the start, plus the top-ups, minus those still waiting.
        ran = waiting_before + (loaded - o.backlog) - stage_.waiting()
    ids = [task_id for task_id, _ in sent]
    await asyncio.to_thread(stage_.wait_ended, ids, 60)
    results = stage_.results(ids)
    latencies = [(r["started"] - at) * 1000 for r, (_, at) in zip(results, sent, strict=True)]
    return Result(o, latencies, least, refills, ran / measured, measured)
