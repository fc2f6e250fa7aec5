"""The report's detail: drains with more worker processes, every measurement per round, and Redis commands
per task by command name."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable

from bench.common import percentile, table
from bench.peers.measure import Measurement
from bench.peers.quiet import of, used
from bench.peers.runner import Results
from bench.peers.spec import AWAIT_ONCE, NO_OP
from bench.peers.systems import SYSTEMS


def scaling(results: Results) -> str:
    """No-op drains with more worker processes; throughput must not fall as workers are added."""
    rows = []
    for name in dict.fromkeys(d.system for d in results.scaling):
        base = None
        previous = None
        for workers in results.options.scale_workers:
            drains = [d for d in of(results.scaling, name) if d.workers == workers]
            if not drains:
                continue
            chosen, tag = used(results, drains)
            rate = statistics.median(d.jobs_per_second for d in chosen)
            base = base or rate / workers
            verdict = "FALLS" if previous is not None and rate < 0.95 * previous else "ok"
            cpu = statistics.median(1000 * d.worker_cpu / d.jobs for d in chosen)
            rows.append(
                [
                    SYSTEMS[name].label,
                    workers,
                    f"{rate:,.0f} {tag}",
                    f"{rate / (base or rate):.2f}x",
                    f"{cpu:.2f}",
                    verdict,
                ]
            )
            previous = rate
    headers = [
        "system",
        "worker processes",
        "jobs/s (median)",
        "vs 1 worker",
        "worker CPU ms/job",
        "not falling (5 % slack)",
    ]
    return table(headers, rows) if rows else "(not run)"


def _flag(results: Results, m: Measurement) -> str:
    return f"{m.other_cores:.2f}" + (" noisy" if m.other_cores > results.options.max_other_load else "")


def _drains(results: Results) -> str:
    rows = [
        [
            d.round,
            SYSTEMS[d.system].label,
            d.workload,
            d.workers,
            d.jobs,
            f"{d.seconds:.2f}",
            f"{d.jobs_per_second:,.0f}",
            f"{d.verified}/{d.jobs}" + ("" if d.verified == d.jobs else f" BAD e.g. {d.bad_sample[:2]}"),
            d.early,
            f"{d.probes / d.jobs:.2f}",
            f"{1000 * d.worker_cpu / d.jobs:.2f}",
            f"{1000 * d.redis_cpu / d.jobs:.3f}",
            _flag(results, d),
        ]
        for d in sorted([*results.drains, *results.scaling], key=lambda d: (d.system, d.workers, d.workload, d.round))
    ]
    headers = [
        *("round", "system", "workload", "workers", "jobs", "s", "jobs/s", "verified", "done before start"),
        *("probes/job", "worker CPU ms/job", "Redis CPU ms/job", "other load (cores)"),
    ]
    return table(headers, rows)


def _round_trips(results: Results) -> str:
    rows = [
        [
            r.round,
            SYSTEMS[r.system].label,
            f"{r.profile}/{r.variant}",
            r.arrival,
            len(r.ms),
            f"{percentile(r.ms, 50):.1f}",
            f"{percentile(r.ms, 90):.1f}",
            f"{percentile(r.ms, 99):.1f}",
            f"{max(r.ms):.1f}",
            _flag(results, r),
        ]
        for r in sorted(results.round_trips, key=lambda r: (r.system, r.profile, r.variant, r.arrival, r.round))
    ]
    headers = [
        *("round", "system", "profile/variant", "arrival", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"),
        "other load (cores)",
    ]
    return table(headers, rows)


def _idles(results: Results) -> str:
    rows = [
        [
            i.round,
            SYSTEMS[i.system].label,
            i.profile,
            f"{i.seconds:.1f}",
            f"{i.per_second:.1f}",
            _top(i.calls, i.seconds),
            _flag(results, i),
        ]
        for i in sorted(results.idles, key=lambda i: (i.system, i.profile, i.round))
    ]
    headers = ["round", "system", "profile", "s", "commands/s", "commands/s by name", "other load (cores)"]
    return table(headers, rows)


def _loads(results: Results) -> str:
    rows = [
        [
            ld.round,
            SYSTEMS[ld.system].label,
            ld.variant,
            ld.tasks,
            ld.clients,
            f"{ld.tasks / ld.seconds:,.0f}",
            f"{ld.per_task:.1f}",
            _flag(results, ld),
        ]
        for ld in sorted(results.loads, key=lambda ld: (ld.system, ld.round))
    ]
    headers = ["round", "system", "variant", "tasks", "clients", "tasks/s", "Redis commands/task", "other load (cores)"]
    return table(headers, rows)


def _chains(results: Results) -> str:
    rows = [
        [
            c.round,
            SYSTEMS[c.system].label,
            c.variant,
            c.steps,
            len(c.ms),
            f"{percentile(c.ms, 50):,.1f}",
            f"{max(c.ms):,.1f}",
            f"{c.per_step:.1f}",
            _top(c.calls, c.steps * len(c.ms)),
            f"{c.steps_per_second:,.0f}" if c.at_once else "-",
            _flag(results, c),
        ]
        for c in sorted(results.chains, key=lambda c: (c.system, c.steps, c.variant, c.round))
    ]
    headers = [
        *("round", "system", "how", "N", "chains", "p50 ms", "max ms", "Redis commands/step"),
        *("commands/step by name", "steps/s at once", "other load (cores)"),
    ]
    return table(headers, rows)


def raw(results: Results) -> str:
    """Every measurement, per round."""
    parts = [
        ("Drains", _drains(results), results.drains or results.scaling),
        ("Round trips", _round_trips(results), results.round_trips),
        ("Idle workers", _idles(results), results.idles),
        ("Commands per task with waiting clients", _loads(results), results.loads),
        ("Chains", _chains(results), results.chains),
    ]
    return "\n\n".join(f"### {title}\n\n{text}" for title, text, measured in parts if measured)


def _top(calls: dict[str, int], per: float, limit: int = 6) -> str:
    ranked = sorted(calls.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {n / per:.1f}" for name, n in ranked[:limit]) or "none"


def breakdown(results: Results) -> str:
    """Redis commands per task by command name (mean over rounds): enqueue and run in each drain, and with
    clients waiting for their results."""
    parts = []
    for name in results.options.systems:
        columns: dict[str, dict[str, float]] = {}
        for workload in (NO_OP, AWAIT_ONCE):
            drains = [d for d in of(results.drains, name) if d.workload == workload]
            if drains:
                columns[f"enqueue ({workload} drain)"] = _mean_per_task((d.enqueue_calls, d.jobs) for d in drains)
                columns[f"run ({workload} drain)"] = _mean_per_task((d.run_calls, d.jobs) for d in drains)
        loads = of(results.loads, name)
        if loads:
            columns[f"{loads[0].clients} clients waiting"] = _mean_per_task((ld.calls, ld.tasks) for ld in loads)
        if not columns:
            continue
        commands = sorted(
            {c for col in columns.values() for c in col}, key=lambda c: -max(col.get(c, 0) for col in columns.values())
        )
        rows = [[c, *(f"{col[c]:.2f}" if col.get(c) else "" for col in columns.values())] for c in commands]
        rows.append(["**total**", *(f"**{sum(col.values()):.2f}**" for col in columns.values())])
        parts.append(f"### {SYSTEMS[name].label}\n\n" + table(["command", *columns], rows))
    return "\n\n".join(parts)


def _mean_per_task(samples: Iterable[tuple[dict[str, int], int]]) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for calls, tasks in samples:
        count += 1
        for command, n in calls.items():
            sums[command] += n / tasks
    return {command: total / count for command, total in sums.items() if total / count >= 0.005}
