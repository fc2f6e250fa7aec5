"""The report's chain section: each system's native chain of N no-op steps beside the same N steps as single
submits chained by its client, and Relay's against the fastest peer's.

Latencies are pooled over the quiet rounds (p50 / p90 of every chain run one after another); Redis commands per
step and the throughput of chains run together are medians of the quiet rounds (``quiet``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.common import percentile, table
from bench.peers.measure import Chain
from bench.peers.quiet import median, of, used
from bench.peers.runner import Results
from bench.peers.spec import SINGLES
from bench.peers.systems import SYSTEMS

RELAY = "relay"
SAME = 0.10  # ratios within 10 % either way are called even: the machine is noisy


def _runs(results: Results, name: str, variant: str, steps: int) -> list[Chain]:
    return [c for c in of(results.chains, name) if c.variant == variant and c.steps == steps]


def _p(results: Results, runs: list[Chain], pct: float) -> float | None:
    if not runs:
        return None
    chosen, _ = used(results, runs)
    return percentile([ms for c in chosen for ms in c.ms], pct)


def _variants(name: str) -> list[str]:
    return [v.name for v in SYSTEMS[name].chains] + [SINGLES]


def _names(results: Results) -> list[str]:
    return [n for n in results.options.systems if SYSTEMS[n].chains and of(results.chains, n)]


def table_for(results: Results, steps: int) -> str:
    """Every system with chains, each native variant and its single submits, for chains of ``steps`` steps."""
    at_once = results.options.chain_at_once
    rows = []
    for name in _names(results):
        singles = _p(results, _runs(results, name, SINGLES, steps), 50)
        for variant in _variants(name):
            runs = _runs(results, name, variant, steps)
            p50, p90 = _p(results, runs, 50), _p(results, runs, 90)
            if p50 is None or p90 is None:
                continue
            tag = used(results, runs)[1]
            commands = median(results, runs, lambda c: c.per_step) or 0.0
            rate = median(results, runs, lambda c: c.steps_per_second)
            rows.append(
                [
                    SYSTEMS[name].label,
                    variant,
                    f"{p50:,.1f} / {p90:,.1f} ms {tag}",
                    f"{p50 / steps:.2f}",
                    "1.00x" if variant == SINGLES else (f"{p50 / singles:.2f}x" if singles else "-"),
                    f"{commands:.1f}",
                    f"{rate:,.0f}" if rate else "-",
                ]
            )
    headers = [
        "system (one worker process)",
        "how",
        f"chain of {steps}, p50 / p90 (n={results.options.chains} per round)",
        "ms per step (p50 / N)",
        "time vs its single submits",
        "Redis commands per step",
        f"steps/s, {at_once} chains at once" if at_once else "steps/s at once",
    ]
    return table(headers, rows) if rows else "(not run)"


@dataclass(frozen=True)
class _Best:
    who: str
    variant: str
    value: float


def _best(results: Results, names: list[str], value: Callable[[str, str], float | None], low: bool) -> _Best | None:
    """The best native chain variant among ``names`` by ``value(name, variant)`` (lowest if ``low``)."""
    found = []
    for name in names:
        for variant in (v.name for v in SYSTEMS[name].chains):
            v = value(name, variant)
            if v is not None and v > 0:
                label = SYSTEMS[name].label + ("" if len(SYSTEMS[name].chains) == 1 else f" ({variant})")
                found.append(_Best(label, variant, v))
    if not found:
        return None
    return (min if low else max)(found, key=lambda b: b.value)


def _verdict(relay: _Best, peer: _Best, low: bool) -> str:
    ratio = relay.value / peer.value
    if abs(ratio - 1) <= SAME:
        return "even (within 10 %)"
    return "Relay" if (ratio < 1) == low else peer.who


Measure = tuple[str, Callable[[str, str], float | None], bool, str]  # what, value(system, variant), low, format


def _measures(results: Results, steps: int) -> list[Measure]:
    def runs(name: str, variant: str) -> list[Chain]:
        return _runs(results, name, variant, steps)

    return [
        ("chain p50, ms", lambda n, v: _p(results, runs(n, v), 50), True, "{:,.1f}"),
        ("chain p90, ms", lambda n, v: _p(results, runs(n, v), 90), True, "{:,.1f}"),
        (
            "steps/s, chains at once",
            lambda n, v: median(results, runs(n, v), lambda c: c.steps_per_second),
            False,
            "{:,.0f}",
        ),
        ("Redis commands per step", lambda n, v: median(results, runs(n, v), lambda c: c.per_step), True, "{:.1f}"),
    ]


def against_fastest(results: Results) -> str:
    """Per N: Relay's best native chain against the best peer's, in time, throughput and commands."""
    names = _names(results)
    peers = [n for n in names if n != RELAY]
    if RELAY not in names or not peers:
        return "(needs Relay and at least one peer with chains)"
    rows = []
    for steps in results.options.chain_steps:
        for what, value, low, fmt in _measures(results, steps):
            relay, peer = _best(results, [RELAY], value, low), _best(results, peers, value, low)
            if relay is None or peer is None:
                continue
            rows.append(
                [
                    steps,
                    what,
                    f"{fmt.format(relay.value)} ({relay.variant})",
                    f"{fmt.format(peer.value)} ({peer.who})",
                    f"{relay.value / peer.value:.2f}x",
                    _verdict(relay, peer, low),
                ]
            )
    headers = ["N", "measure (native chains only)", "Relay, its best way", "best peer", "Relay / peer", "better"]
    return table(headers, rows) if rows else "(not run)"


def section(results: Results) -> str:
    """The whole chain section of the report."""
    opts = results.options
    left_out = [SYSTEMS[n].label for n in opts.systems if not SYSTEMS[n].chains]
    intro = (
        "A chain of N no-op steps (`step(value) -> value + 1`, the first given 0; the final value, N, is checked) "
        f"submitted as one workflow and awaited to its final value: {opts.chains} chains one after another per "
        "round (their latency and every Redis command they caused, workers' and clients' alike, idle traffic "
        f"included), then {opts.chain_at_once} chains started together (steps/s until the last ended). Beside "
        "each, the same N steps as single submits, each awaited and its result passed into the next by the "
        "client (`single submits`)."
        + (f" Without a native chain, left out: {', '.join(left_out)}." if left_out else "")
    )
    tables = [f"### Chains of {steps} steps\n\n" + table_for(results, steps) for steps in opts.chain_steps]
    versus = "### Relay against the fastest peer\n\n" + against_fastest(results)
    return "\n\n".join([intro, *tables, versus])
