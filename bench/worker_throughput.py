"""Relay's worker vs a bare arq worker on no-op jobs, side by side on one private Redis.

Usage: .venv/bin/python -m bench.worker_throughput [--jobs 3000] [--rounds 3] [--configs 10:0.1,10:0.01]
       [--with-patched] [--profile]

Each config is ``concurrency:poll_delay``. For each, both workers drain the same number of pre-enqueued
``echo`` jobs (see ``bench.drain``); rounds alternate bare/Relay so drift hits both alike. Two configs
by default, because they answer different questions (medians over the rounds, since other
processes on a shared 2-core box move single runs by 20 % or more):

- ``10:0.1`` is Relay's default. arq starts at most ``queue_read_limit`` (100 here) jobs per poll,
  so a worker of instant jobs is capped near 1,000 jobs/s by the poll timer, not by its CPU.
- ``10:0.01`` lifts that cap, so both workers run at 100 % CPU and the ratio is the per-job cost
  of what Relay adds (validation, three events, its timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.common import bench_scope, table
from bench.drain import BARE, BATCHED, RELAY, DrainResult, drain
from bench.profiling import summarize

TARGET_RATIO = 0.9


@dataclass(frozen=True)
class Config:
    """Worker settings both flavours run with."""

    concurrency: int
    poll_delay: float

    @classmethod
    def parse(cls, text: str) -> Config:
        concurrency, poll = text.split(":")
        return cls(int(concurrency), float(poll))

    def env(self) -> dict[str, str]:
        return {"RELAY_WORKER_CONCURRENCY": str(self.concurrency), "RELAY_POLL_DELAY_SECONDS": str(self.poll_delay)}


Round = tuple[Config, list[DrainResult]]


# Where a worker's CPU goes, by the function whose stack a sample contains (first match wins).
PROFILE_GROUPS = {
    "Relay: event writes (EventLog.publish, 3 per job)": "EventLog.publish",
    "Relay: argument validation (TaskSpec.parse)": "TaskSpec.parse",
    "arq: start_jobs (WATCH/EXISTS/ZSCORE/MULTI per job)": "Worker.start_jobs",
    "arq: finish_job (result + cleanup)": "Worker.finish_job",
    "arq: per-job log lines": "Logger.",
    "arq: run_job, the rest (job fetch, call, timeouts)": "Worker.run_job",
}


async def run(configs: list[Config], jobs: int, rounds: int, with_patched: bool) -> list[Round]:
    """Per config and round: bare arq, then Relay (then the patched Relay), ``jobs`` jobs each."""
    kinds = [BARE, RELAY, BATCHED] if with_patched else [BARE, RELAY]
    results = []
    with bench_scope() as bench:
        redis = bench.redis()
        for config in configs:
            for _ in range(rounds):
                results.append((config, [await drain(bench, redis, k, jobs, settings=config.env()) for k in kinds]))
    return results


async def profile(config: Config, jobs: int) -> str:
    """py-spy one drain of each worker (an extra run: sampling slows it) and group the samples."""
    lines = []
    with bench_scope() as bench:
        redis = bench.redis()
        for kind in (BARE, RELAY):
            raw = bench.log_dir / f"{kind.settings_module}.raw"
            await drain(bench, redis, kind, jobs, settings=config.env(), profile=raw)
            lines.append(f"py-spy of the {kind.label} worker, {config.concurrency} / {config.poll_delay:g} s:")
            lines += [f"  {100 * share:5.1f}%  {label}" for label, share in grouped_shares(raw).items()]
            lines.append(summarize(raw, top=25))
    return "\n".join(lines)


def grouped_shares(raw: Path) -> dict[str, float]:
    """Share of samples per ``PROFILE_GROUPS`` entry; each sample counts once, in its first group."""
    counts = dict.fromkeys([*PROFILE_GROUPS, "other (event loop, socket I/O, polling)"], 0)
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, n = line.rsplit(" ", 1)
        total += int(n)
        label = next((lb for lb, needle in PROFILE_GROUPS.items() if needle in stack), None)
        counts[label or "other (event loop, socket I/O, polling)"] += int(n)
    return {label: n / max(total, 1) for label, n in counts.items()}


def report(results: list[Round]) -> str:
    """Every drain, then per config and worker the median over rounds, with the ratio to bare arq."""
    rows = [
        _row(config, r, r.jobs_per_second / drains[0].jobs_per_second) for config, drains in results for r in drains
    ]
    summary = []
    for config in dict.fromkeys(c for c, _ in results):
        rounds = [drains for c, drains in results if c == config]
        for i, kind in enumerate(d.kind for d in rounds[0]):
            rates = [drains[i].jobs_per_second for drains in rounds]
            ratios = [drains[i].jobs_per_second / drains[0].jobs_per_second for drains in rounds]
            summary.append(
                [
                    f"{config.concurrency} / {config.poll_delay:g} s",
                    kind,
                    len(rounds),
                    f"{statistics.median(rates):,.0f}",
                    f"{min(rates):,.0f} - {max(rates):,.0f}",
                    "" if i == 0 else _verdict(statistics.median(ratios)),
                ]
            )
    headers = [
        "concurrency / poll",
        "worker",
        "jobs",
        "completed",
        "drain s",
        "jobs/s",
        "worker CPU ms/job",
        "Redis CPU ms/job",
        "EVALSHA/job",
        "other load (cores)",
        "vs bare arq",
    ]
    summary_headers = [
        "concurrency / poll",
        "worker",
        "rounds",
        "median jobs/s",
        "range",
        f"median ratio (target >= {TARGET_RATIO})",
    ]
    return f"{table(headers, rows)}\n\n{table(summary_headers, summary)}"


def _row(config: Config, r: DrainResult, ratio: float) -> list[object]:
    return [
        f"{config.concurrency} / {config.poll_delay:g} s",
        r.kind,
        r.jobs,
        f"{r.completed}/{r.jobs}",
        f"{r.seconds:.2f}",
        f"{r.jobs_per_second:,.0f}",
        f"{1000 * r.worker_cpu_seconds / r.jobs:.3f}",
        f"{1000 * r.redis_cpu_seconds / r.jobs:.3f}",
        f"{r.calls_per_job('evalsha'):.1f}",
        f"{r.other_cores:.2f}",
        f"{ratio:.2f}",
    ]


def _verdict(ratio: float) -> str:
    return f"{ratio:.2f} ({'met' if ratio >= TARGET_RATIO else 'MISSED'})"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3_000, help="jobs per drain")
    parser.add_argument("--configs", default="10:0.1,10:0.01", help="comma-separated concurrency:poll_delay")
    parser.add_argument("--rounds", type=int, default=3, help="bare/Relay pairs per config (medians are reported)")
    parser.add_argument("--with-patched", action="store_true", help="also run the experiments in bench.patched_worker")
    parser.add_argument("--profile", action="store_true", help="add a py-spy run of each worker (last config)")
    args = parser.parse_args(argv)
    configs = [Config.parse(c) for c in args.configs.split(",")]
    output = report(asyncio.run(run(configs, args.jobs, args.rounds, args.with_patched)))
    if args.profile:
        output += "\n\n" + asyncio.run(profile(configs[-1], args.jobs))
    print(output, flush=True)
    return output


if __name__ == "__main__":
    main()
