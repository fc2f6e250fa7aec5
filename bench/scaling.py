"""Relay worker throughput with 1, 2 and 4 worker processes draining the same pre-filled queue.

Usage: .venv/bin/python -m bench.scaling [--jobs 10000] [--workers 1,2,4] [--concurrency 10] [--poll-delay 0.1]

Every worker reads the *head* of the same sorted set (arq's ``ZRANGEBYSCORE ... LIMIT 0 n``), so
workers race for the same job ids and the losers spend a WATCH/EXISTS/ZSCORE round trip to learn
that; the CPU per job column shows that cost. On a 2-core machine, Redis, the workers and this
process share the cores, so more than two workers can only add contention.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from bench.common import bench_scope, table
from bench.drain import RELAY, DrainResult, drain


async def run(worker_counts: list[int], jobs: int, concurrency: int, poll_delay: float) -> list[DrainResult]:
    """One drain of ``jobs`` jobs per worker count, on one private Redis."""
    env = {"RELAY_WORKER_CONCURRENCY": str(concurrency), "RELAY_POLL_DELAY_SECONDS": str(poll_delay)}
    with bench_scope() as bench:
        redis = bench.redis()
        return [await drain(bench, redis, RELAY, jobs, workers=n, settings=env) for n in worker_counts]


def report(results: list[DrainResult]) -> str:
    """Throughput, speed-up over one worker, and where the CPU went."""
    base = results[0].jobs_per_second / results[0].workers
    rows = [
        [
            r.workers,
            f"{r.completed}/{r.jobs}",
            f"{r.seconds:.2f}",
            f"{r.jobs_per_second:,.0f}",
            f"{r.jobs_per_second / base:.2f}x",
            f"{100 * r.worker_cpu_seconds / r.seconds:.0f} %",
            f"{1000 * r.worker_cpu_seconds / r.jobs:.3f}",
            f"{100 * r.redis_cpu_seconds / r.seconds:.0f} %",
            f"{r.calls_per_job('watch'):.2f}",
            f"{r.calls_per_job('zrangebyscore'):.3f}",
            f"{r.other_cores:.2f}",
        ]
        for r in results
    ]
    headers = [
        "workers",
        "completed",
        "drain s",
        "jobs/s",
        "vs 1 worker",
        "workers' CPU (all)",
        "worker CPU ms/job",
        "Redis CPU",
        "WATCH/job",
        "polls/job",
        "other load (cores)",
    ]
    return f"{table(headers, rows)}\n(cores: {os.cpu_count()})"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per drain")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker process counts")
    parser.add_argument("--concurrency", type=int, default=10, help="RELAY_WORKER_CONCURRENCY of each worker")
    parser.add_argument("--poll-delay", type=float, default=0.1, help="RELAY_POLL_DELAY_SECONDS")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    output = report(asyncio.run(run(counts, args.jobs, args.concurrency, args.poll_delay)))
    print(output, flush=True)
    return output


if __name__ == "__main__":
    main()
