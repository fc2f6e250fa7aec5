"""The Markdown report: the summary table of issue #13, scaling, and every raw number behind them.

Medians and pooled percentiles use only the measurements taken while other processes on the machine
used at most ``--max-other-load`` cores; when every round was above it, all rounds are used and the cell
says ``noisy``. ``[q/n]`` after a number: q of n rounds were quiet enough to be used.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from bench.common import percentile, table
from bench.peers import redisstats
from bench.peers.measure import Measurement, RoundTrip
from bench.peers.runner import Results
from bench.peers.systems import SYSTEMS

M = TypeVar("M", bound=Measurement)


def _quiet(results: Results, items: Sequence[M]) -> tuple[list[M], str]:
    """The measurements to summarise, and the ``[q/n]`` (or ``noisy``) tag saying which they are."""
    quiet = [m for m in items if m.other_cores <= results.options.max_other_load]
    if quiet:
        return quiet, f"[{len(quiet)}/{len(items)}]"
    return list(items), f"[noisy {len(items)}/{len(items)}]"


def _of(items: Iterable[M], system: str, profile: str | None = None) -> list[M]:
    return [m for m in items if m.system == system and (profile is None or m.profile == profile)]


def _median(results: Results, items: Sequence[M], value: Callable[[M], float], fmt: str = "{:,.0f}") -> str:
    if not items:
        return "-"
    used, tag = _quiet(results, items)
    return f"{fmt.format(statistics.median(value(m) for m in used))} {tag}"


def _latency(results: Results, rts: Sequence[RoundTrip]) -> str:
    if not rts:
        return "-"
    used, tag = _quiet(results, rts)
    pooled = [ms for rt in used for ms in rt.ms]
    return f"{percentile(pooled, 50):.1f} / {percentile(pooled, 99):.1f} ms {tag}"


def summary(results: Results) -> str:
    """One row per system, the columns of issue #13 plus Redis commands per task."""
    opts = results.options
    rows = []
    for name in opts.systems:
        system = SYSTEMS[name]
        main = system.main_profile.name
        rts = _of(results.round_trips, name)
        primary = system.main_profile.variants[0].name if system.main_profile.variants else ""
        tuned = [rt for rt in rts if rt.variant == primary and rt.profile == main]
        defaults = [rt for rt in rts if rt.variant == "defaults" and rt.variant != primary]
        idle = _median(results, _of(results.idles, name, main), lambda m: m.per_second, "{:,.1f}")
        idle_defaults = [i for i in _of(results.idles, name) if i.profile != main]
        if idle_defaults:
            idle += f" ({_median(results, idle_defaults, lambda m: m.per_second, '{:,.1f}')} at defaults)"
        drains = _of(results.drains, name)
        broken = [d for d in drains if d.verified != d.jobs or d.early]
        rate = _median(results, drains, lambda d: d.jobs_per_second)
        if broken:
            rate += f" ({len(broken)} drain(s) NOT VERIFIED: see per round)"
        rows.append(
            [
                system.label,
                rate,
                f"{_latency(results, tuned)} ({primary})" if tuned else "-",
                _latency(results, defaults),
                idle,
                _median(results, drains, lambda d: redisstats.total(d.enqueue_calls) / d.jobs, "{:.1f}")
                + " + "
                + _median(results, drains, lambda d: redisstats.total(d.run_calls) / d.jobs, "{:.1f}"),
                _median(results, _of(results.loads, name), lambda m: m.per_task, "{:.1f}"),
            ]
        )
    headers = [
        "system (one worker process)",
        f"drain of {opts.jobs:,} preloaded no-op jobs, jobs/s (median)",
        f"round trip submit -> result, p50 / p99 (n={opts.rt_requests} per round)",
        f"round trip at the client's defaults (n={opts.rt_short_requests})",
        "idle Redis commands/s",
        "Redis commands/task: enqueue + run (drain)",
        f"Redis commands/task, {opts.load_clients} clients waiting for results",
    ]
    return table(headers, rows)


def scaling(results: Results) -> str:
    """Drains with more worker processes; throughput must not fall as workers are added."""
    rows = []
    for name in dict.fromkeys(d.system for d in results.scaling):
        base = None
        previous = None
        for workers in results.options.scale_workers:
            drains = [d for d in _of(results.scaling, name) if d.workers == workers]
            if not drains:
                continue
            used, tag = _quiet(results, drains)
            rate = statistics.median(d.jobs_per_second for d in used)
            base = base or rate / workers
            verdict = "FALLS" if previous is not None and rate < 0.95 * previous else "ok"
            cpu = statistics.median(1000 * d.worker_cpu / d.jobs for d in used)
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


def raw(results: Results) -> str:
    """Every measurement, per round."""
    limit = results.options.max_other_load

    def flag(m: Measurement) -> str:
        return f"{m.other_cores:.2f}" + (" noisy" if m.other_cores > limit else "")

    drains = [
        [
            d.round,
            SYSTEMS[d.system].label,
            d.workers,
            d.jobs,
            f"{d.seconds:.2f}",
            f"{d.jobs_per_second:,.0f}",
            f"{d.verified}/{d.jobs}" + ("" if d.verified == d.jobs else f" BAD e.g. {d.bad_sample[:2]}"),
            d.early,
            f"{d.probes / d.jobs:.2f}",
            f"{1000 * d.worker_cpu / d.jobs:.2f}",
            f"{1000 * d.redis_cpu / d.jobs:.3f}",
            flag(d),
        ]
        for d in sorted([*results.drains, *results.scaling], key=lambda d: (d.system, d.workers, d.round))
    ]
    drain_headers = [
        "round",
        "system",
        "workers",
        "jobs",
        "s",
        "jobs/s",
        "verified",
        "done before start",
        "probes/job",
        "worker CPU ms/job",
        "Redis CPU ms/job",
        "other load (cores)",
    ]
    rts = [
        [
            r.round,
            SYSTEMS[r.system].label,
            f"{r.profile}/{r.variant}",
            len(r.ms),
            f"{percentile(r.ms, 50):.1f}",
            f"{percentile(r.ms, 90):.1f}",
            f"{percentile(r.ms, 99):.1f}",
            f"{max(r.ms):.1f}",
            flag(r),
        ]
        for r in sorted(results.round_trips, key=lambda r: (r.system, r.profile, r.variant, r.round))
    ]
    rt_headers = [
        "round",
        "system",
        "profile/variant",
        "n",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "other load (cores)",
    ]
    idles = [
        [
            i.round,
            SYSTEMS[i.system].label,
            i.profile,
            f"{i.seconds:.1f}",
            f"{i.per_second:.1f}",
            _top(i.calls, i.seconds),
            flag(i),
        ]
        for i in sorted(results.idles, key=lambda i: (i.system, i.profile, i.round))
    ]
    idle_headers = ["round", "system", "profile", "s", "commands/s", "commands/s by name", "other load (cores)"]
    loads = [
        [
            ld.round,
            SYSTEMS[ld.system].label,
            ld.variant,
            ld.tasks,
            ld.clients,
            f"{ld.tasks / ld.seconds:,.0f}",
            f"{ld.per_task:.1f}",
            flag(ld),
        ]
        for ld in sorted(results.loads, key=lambda ld: (ld.system, ld.round))
    ]
    load_headers = [
        "round",
        "system",
        "variant",
        "tasks",
        "clients",
        "tasks/s",
        "Redis commands/task",
        "other load (cores)",
    ]
    return "\n\n".join(
        [
            "### Drains\n\n" + table(drain_headers, drains),
            "### Round trips\n\n" + table(rt_headers, rts),
            "### Idle workers\n\n" + table(idle_headers, idles),
            "### Commands per task with waiting clients\n\n" + table(load_headers, loads),
        ]
    )


def _top(calls: dict[str, int], per: float, limit: int = 6) -> str:
    ranked = sorted(calls.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {n / per:.1f}" for name, n in ranked[:limit]) or "none"


def breakdown(results: Results) -> str:
    """Redis commands per task by command name (mean over rounds): enqueue and run in the drain, and with
    clients waiting for their results."""
    parts = []
    for name in results.options.systems:
        columns: dict[str, dict[str, float]] = {}
        drains = _of(results.drains, name)
        if drains:
            columns["enqueue (drain)"] = _mean_per_task((d.enqueue_calls, d.jobs) for d in drains)
            columns["run (drain)"] = _mean_per_task((d.run_calls, d.jobs) for d in drains)
        loads = _of(results.loads, name)
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


def notes(results: Results) -> str:
    lines = []
    for name in results.options.systems:
        system = SYSTEMS[name]
        variants = "; ".join(f"{p.name}/{v.name}: {v.note}" for p in system.profiles for v in p.variants)
        waiting = system.main_profile.load_variant
        lines.append(f"- **{system.label}**: {system.note}. Round trips: {variants}. Waiting clients: {waiting}.")
    return "\n".join(lines)


def render(results: Results, command: str, facts: dict[str, str]) -> str:
    opts = results.options
    noisy = results.other_cores > opts.max_other_load
    sections = [
        "# Relay and its peers on one machine (issue #13)",
        f"`{command}`\n\n"
        f"Took {results.seconds / 60:.1f} min. Load average (1/5/15 min, runnable/total, last PID) before: "
        f"`{results.loadavg_before}`, after: `{results.loadavg_after}`. Other processes used "
        f"**{results.other_cores:.2f} cores** on average during the run (up to {results.other_cores_max:.2f} "
        "in a 5 s window)"
        + (" (**noisy**: above the limit)" if noisy else "")
        + f"; measurements above {opts.max_other_load:g} cores are marked noisy and left out of medians.",
        "## Summary\n\n" + summary(results),
        notes(results),
        "## More worker processes\n\n" + scaling(results),
        "## Machine and versions\n\n"
        + table(["fact", "value"], [*facts.items(), ("redis-server (measured)", results.redis_version)])
        + "\n\n"
        + "\n\n".join(table([venv_name, "version"], list(v.items())) for venv_name, v in results.versions.items()),
        "## Per round\n\n" + raw(results),
        "## Redis commands per task, by command\n\n" + breakdown(results),
    ]
    if results.failures:
        failures = [
            [f.round, f.system, f.profile, f.stage, f.message.replace("\n", " ")[:400]] for f in results.failures
        ]
        sections.append("## Failures\n\n" + table(["round", "system", "profile", "stage", "error"], failures))
    return "\n\n".join(sections) + "\n"
