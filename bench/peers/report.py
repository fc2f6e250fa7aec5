"""The Markdown report: the summary (round trips at random arrival first), Relay against the fastest peer,
every client variant's round trips, both drains, chains (``report_chains``), then the detail (``report_detail``).

Numbers are medians (drains, idle, commands) or pooled percentiles (round trips) of the quiet rounds (see
``quiet``); ``[q/n]`` after a number: q of n rounds were quiet enough to be used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.common import table
from bench.peers import redisstats
from bench.peers.measure import BACK_TO_BACK, RANDOM, Drain, RoundTrip
from bench.peers.quiet import latency, latency_cell, median, median_cell, of
from bench.peers.report_chains import section as chains
from bench.peers.report_detail import breakdown, raw, scaling
from bench.peers.runner import Results
from bench.peers.spec import AWAIT_ONCE, CHAIN, NO_OP, System
from bench.peers.systems import SYSTEMS

RELAY = "relay"
MODES = {RANDOM: "at random arrival", BACK_TO_BACK: "back to back"}
WORKLOADS = {NO_OP: "no-op jobs", AWAIT_ONCE: "jobs that await once"}


def _primary(system: System) -> str:
    """The variant the summary shows: the main profile's first (tuned where a client polls slowly by default)."""
    variants = system.main_profile.variants
    return variants[0].name if variants else ""


def _rts(results: Results, system: System, profile: str, variant: str, arrival: str) -> list[RoundTrip]:
    return [r for r in of(results.round_trips, system.name, profile) if r.variant == variant and r.arrival == arrival]


def _drains(results: Results, name: str, workload: str) -> list[Drain]:
    return [d for d in of(results.drains, name) if d.workload == workload]


def _drain_cell(results: Results, drains: list[Drain]) -> str:
    cell = median_cell(results, drains, lambda d: d.jobs_per_second)
    broken = [d for d in drains if d.verified != d.jobs or d.early]
    return cell + (f" ({len(broken)} drain(s) NOT VERIFIED: see per round)" if broken else "")


def summary(results: Results) -> str:
    """One row per system: round trips (at random arrival first), both drains, idle cost, Redis commands."""
    opts = results.options
    rows = []
    for name in opts.systems:
        system = SYSTEMS[name]
        main, primary = system.main_profile.name, _primary(system)
        at_random = _rts(results, system, main, primary, RANDOM)
        defaults = [
            r
            for r in of(results.round_trips, name)
            if r.variant == "defaults" and r.arrival == RANDOM and r.variant != primary
        ]
        idle = median_cell(results, of(results.idles, name, main), lambda m: m.per_second, "{:,.1f}")
        idle_defaults = [i for i in of(results.idles, name) if i.profile != main]
        if idle_defaults:
            idle += f" ({median_cell(results, idle_defaults, lambda m: m.per_second, '{:,.1f}')} at defaults)"
        no_op = _drains(results, name, NO_OP)
        rows.append(
            [
                system.label,
                f"{latency_cell(results, at_random)} ({primary})" if at_random else "-",
                latency_cell(results, _rts(results, system, main, primary, BACK_TO_BACK)),
                latency_cell(results, defaults),
                _drain_cell(results, no_op),
                _drain_cell(results, _drains(results, name, AWAIT_ONCE)),
                idle,
                median_cell(results, no_op, lambda d: redisstats.total(d.enqueue_calls) / d.jobs, "{:.1f}")
                + " + "
                + median_cell(results, no_op, lambda d: redisstats.total(d.run_calls) / d.jobs, "{:.1f}"),
                median_cell(results, of(results.loads, name), lambda m: m.per_task, "{:.1f}"),
            ]
        )
    pause = f"0-{opts.rt_max_pause * 1000:g} ms"
    headers = [
        "system (one worker process)",
        f"round trip at random arrival (pause {pause}), p50 / p99 (n={opts.rt_requests} per round)",
        "round trip back to back, p50 / p99",
        f"round trip at the client's defaults, random arrival (n={opts.rt_short_requests})",
        f"drain of {opts.jobs:,} no-op jobs, jobs/s (median)",
        f"drain of {opts.jobs:,} jobs that await once, jobs/s",
        "idle Redis commands/s",
        "Redis commands/task: enqueue + run (no-op drain)",
        f"Redis commands/task, {opts.load_clients} clients waiting for results",
    ]
    return table(headers, rows)


@dataclass(frozen=True)
class _Entry:
    """One system's number for one comparison, and what it is (a client variant, for round trips)."""

    who: str
    value: float
    system: str


def _round_trip_entries(results: Results, arrival: str, pick: int) -> list[_Entry]:
    """p50 (``pick`` 0) or p99 (1) of every measured client variant at ``arrival``."""
    entries = []
    for name in results.options.systems:
        system = SYSTEMS[name]
        for profile in system.profiles:
            for variant in profile.variants:
                pair = latency(results, _rts(results, system, profile.name, variant.name, arrival))
                if pair:
                    who = system.label + ("" if len(_variants(system)) == 1 else f", {variant.name}")
                    entries.append(_Entry(who, pair[pick], name))
    return entries


def _variants(system: System) -> list[str]:
    return [v.name for p in system.profiles for v in p.variants]


def _drain_entries(results: Results, workload: str) -> list[_Entry]:
    entries = []
    for name in results.options.systems:
        rate = median(results, _drains(results, name, workload), lambda d: d.jobs_per_second)
        if rate is not None:
            entries.append(_Entry(SYSTEMS[name].label, rate, name))
    return entries


def against_fastest(results: Results) -> str:
    """Relay's number beside the fastest peer's, for each round trip mode and percentile and for both drains."""
    comparisons: list[tuple[str, list[_Entry], bool, Callable[[float], str]]] = []
    for arrival in (RANDOM, BACK_TO_BACK):
        for pick, pct in ((0, "p50"), (1, "p99")):
            entries = _round_trip_entries(results, arrival, pick)
            comparisons.append((f"round trip {MODES[arrival]}, {pct}", entries, False, lambda v: f"{v:.1f} ms"))
    for workload in (NO_OP, AWAIT_ONCE):
        entries = _drain_entries(results, workload)
        comparisons.append((f"drain, {WORKLOADS[workload]}", entries, True, lambda v: f"{v:,.0f} jobs/s"))
    rows = []
    for what, entries, higher_is_faster, fmt in comparisons:
        relay = [e for e in entries if e.system == RELAY]
        peers = [e for e in entries if e.system != RELAY]
        if not relay or not peers:
            continue
        best = (max if higher_is_faster else min)(peers, key=lambda e: e.value)
        faster = relay[0].value > best.value if higher_is_faster else relay[0].value < best.value
        ratio = f"{relay[0].value / best.value:.2f}x"
        rows.append(
            [what, fmt(relay[0].value), f"{fmt(best.value)} ({best.who})", ratio, "Relay" if faster else best.who]
        )
    if not rows:
        return "(needs Relay and at least one peer)"
    headers = ["measure", "Relay", "fastest peer", "Relay / fastest peer", "faster"]
    return table(headers, rows)


def round_trips(results: Results) -> str:
    """Every client variant of every system, at random arrival and back to back."""
    rows = []
    for name in results.options.systems:
        system = SYSTEMS[name]
        for profile in system.profiles:
            for variant in profile.variants:
                cells = [
                    latency_cell(results, _rts(results, system, profile.name, variant.name, a))
                    for a in (RANDOM, BACK_TO_BACK)
                ]
                if cells != ["-", "-"]:
                    rows.append([system.label, f"{profile.name}/{variant.name}", variant.note, *cells])
    headers = [
        "system",
        "profile/variant",
        "how the client waits",
        "at random arrival, p50 / p99",
        "back to back, p50 / p99",
    ]
    return table(headers, rows)


def drains(results: Results) -> str:
    """Both drains side by side, with what each system's awaiting task does."""
    rows = []
    for name in results.options.systems:
        system = SYSTEMS[name]
        no_op, awaiting = _drains(results, name, NO_OP), _drains(results, name, AWAIT_ONCE)
        if not no_op and not awaiting:
            continue
        a, b = (median(results, ds, lambda d: d.jobs_per_second) for ds in (no_op, awaiting))
        ratio = f"{b / a:.2f}" if a and b else "-"
        rows.append([system.label, _drain_cell(results, no_op), _drain_cell(results, awaiting), ratio, system.awaits])
    headers = ["system", "no-op jobs/s", "await-once jobs/s", "await once / no-op", "what the await-once task does"]
    return table(headers, rows) if rows else "(not run)"


def notes(results: Results) -> str:
    lines = []
    for name in results.options.systems:
        system = SYSTEMS[name]
        variants = "; ".join(f"{p.name}/{v.name}: {v.note}" for p in system.profiles for v in p.variants)
        waiting = system.main_profile.load_variant
        lines.append(f"- **{system.label}**: {system.note}. Round trips: {variants}. Waiting clients: {waiting}.")
    return "\n".join(lines)


def _run_facts(results: Results, command: str) -> str:
    opts = results.options
    noisy = results.other_cores > opts.max_other_load
    return (
        f"`{command}`\n\n"
        f"Took {results.seconds / 60:.1f} min. Load average (1/5/15 min, runnable/total, last PID) before: "
        f"`{results.loadavg_before}`, after: `{results.loadavg_after}`. Other processes used "
        f"**{results.other_cores:.2f} cores** on average during the run (up to {results.other_cores_max:.2f} "
        "in a 5 s window)"
        + (" (**noisy**: above the limit)" if noisy else "")
        + f"; measurements above {opts.max_other_load:g} cores are marked noisy and left out of medians."
    )


def render(results: Results, command: str, facts: dict[str, str]) -> str:
    opts = results.options
    pause = f"{opts.rt_max_pause * 1000:g} ms"
    only_chains = opts.workloads == {CHAIN}
    sections = [
        "# Relay and its peers on one machine (issues #13, #23 and #25)",
        _run_facts(results, command),
    ]
    if not only_chains:
        sections += [
            "## Summary\n\n"
            f"Round trips first **at random arrival**: one client, a pause drawn uniformly from 0 to {pause} before "
            "each request, so every submit meets an idle API and worker; then **back to back**, each request right "
            "after the previous result. Relay's is its own client, `relay.client.Client` (`run()`: one POST whose "
            "response streams the task's events back to `end`, over urllib3); the peers' clients use their libraries' "
            "own calls. "
            "A worker that polls (bare arq, Dramatiq) can look "
            "slower back to back than at random arrival: each request then arrives as the worker begins its wait "
            "after the previous job. Drains: jobs preloaded while the worker is paused, no-op or awaiting once "
            "before returning.\n\n" + summary(results),
            "## Relay against the fastest peer\n\n"
            "Round trips: lower is faster (every client variant of every peer counts); drains: higher is faster.\n\n"
            + against_fastest(results),
            "## Round trips, every client variant\n\n" + round_trips(results),
            "## Drains: no-op jobs and jobs that await once\n\n" + drains(results),
        ]
    if CHAIN in opts.workloads:
        sections.append("## Chains: N no-op steps as one workflow, against N single submits\n\n" + chains(results))
    sections.append("## Systems\n\n" + notes(results))
    if not only_chains:
        sections.append("## More worker processes (no-op drains)\n\n" + scaling(results))
    sections.append(
        "## Machine and versions\n\n"
        + table(["fact", "value"], [*facts.items(), ("redis-server (measured)", results.redis_version)])
        + "\n\n"
        + "\n\n".join(table([venv_name, "version"], list(v.items())) for venv_name, v in results.versions.items())
    )
    sections.append("## Per round\n\n" + raw(results))
    if not only_chains:
        sections.append("## Redis commands per task, by command\n\n" + breakdown(results))
    if results.failures:
        failures = [
            [f.round, f.system, f.profile, f.stage, f.message.replace("\n", " ")[:400]] for f in results.failures
        ]
        sections.append("## Failures\n\n" + table(["round", "system", "profile", "stage", "error"], failures))
    return "\n\n".join(sections) + "\n"
