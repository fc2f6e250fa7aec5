"""Part 2: a task limited to three running at once, across four worker processes.

``three_at_once`` jobs (a sleep of ``task_ms``, ``concurrency=3``) are preloaded while the workers are stopped,
then all four resume. From the jobs' own start and end times: the most that overlapped (target: exactly 3), and
the throughput against the ideal 3 / ``task_ms`` (target at least 90 %). Each job also counts its running copies
in Redis (``INCR`` as it starts, ``DECR`` as it ends) and reports the count it saw, a second, independent view.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.common import table
from bench.scheduling.stage import Conditions, Job, plural, preload, stage
from bench.scheduling.tasks import CONCURRENCY


@dataclass(frozen=True)
class Options:
    jobs: int = 1_000
    workers: int = 4
    task_ms: float = 50.0


@dataclass
class Result:
    options: Options
    runs: list[dict[str, Any]]
    claim_waits: float  # relay_claim_waits_total{reason="concurrency"}, all workers
    conditions: Conditions = field(default_factory=Conditions)

    @property
    def wall(self) -> float:
        return float(max(r["ended"] for r in self.runs) - min(r["started"] for r in self.runs))

    @property
    def ideal_per_second(self) -> float:
        return CONCURRENCY / (self.options.task_ms / 1000)

    def render(self) -> str:
        o, runs = self.options, self.runs
        per_second = len(runs) / self.wall
        durations = [r["ended"] - r["started"] for r in runs]
        idle_ms = (CONCURRENCY * self.wall - sum(durations)) / len(runs) * 1000
        share = sorted(Counter(r["pid"] for r in runs).values(), reverse=True)
        rows = [
            ["most running at once, from start/end times", f"{most_at_once(runs)}", "exactly 3"],
            ["most running at once, as the jobs counted (INCR)", f"{max(r['running'] for r in runs)}", "exactly 3"],
            ["throughput", f"{per_second:.1f} jobs/s ({len(runs):,} in {self.wall:.2f} s)", ""],
            ["... of the ideal 3 / task time", f"{per_second / self.ideal_per_second:.1%}"
             f" (ideal {self.ideal_per_second:.0f} jobs/s)", ">= 90 %"],
            ["a slot's idle time between jobs, mean", f"{idle_ms:.1f} ms", ""],
            ["a job's run, median", f"{statistics.median(durations) * 1000:.1f} ms", ""],
            ["jobs per worker", " / ".join(map(str, share)), ""],
            ["lanes held back by the full limit (relay_claim_waits_total{reason=\"concurrency\"})",
             f"{self.claim_waits:.0f}", ""],
        ]  # fmt: skip
        workers = plural(o.workers, "worker process", "worker processes")
        return "\n".join([
            f"### 2. Concurrency: `concurrency=3` across {workers}",
            "",
            table(["measure", "value", "target"], rows),
            "",
            f"{workers} (RELAY_WORKER_CONCURRENCY 10 each), {o.jobs:,} `three_at_once` jobs of"
            f" {o.task_ms:g} ms preloaded while the workers were stopped, then resumed together.",
            self.conditions.line(),
        ])  # fmt: skip


def most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most runs whose [started, ended] intervals overlapped (an end before a start at the same instant)."""
    edges = sorted([(r["started"], 1) for r in runs] + [(r["ended"], -1) for r in runs])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def run(options: Options) -> Result:
    conditions = Conditions()
    with stage() as stage_:
        workers = stage_.start_workers(options.workers)
        for worker in workers:
            worker.pause()
        ids = preload(stage_, [Job("three_at_once", {"seconds": options.task_ms / 1000})] * options.jobs)
        for worker in workers:
            worker.resume()
        expected = options.jobs / CONCURRENCY * options.task_ms / 1000
        stage_.wait_drained(timeout=3 * expected + 60)
        time.sleep(0.1)  # the last commits' metrics
        waits = sum(w.claim_waits().get("concurrency", 0.0) for w in workers)
        runs = stage_.results(ids)
    return Result(options, runs, waits, conditions.close())
