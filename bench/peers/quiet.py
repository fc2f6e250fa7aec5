"""Which measurements a summary uses, and the numbers it quotes from them.

Medians and pooled percentiles use only the measurements taken while other processes on the machine
used at most ``--max-other-load`` cores; when every round was above it, all rounds are used and the tag
says ``noisy``. ``[q/n]`` after a number: q of n rounds were quiet enough to be used.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from bench.common import percentile
from bench.peers.measure import Measurement, RoundTrip
from bench.peers.runner import Results

M = TypeVar("M", bound=Measurement)


def used(results: Results, items: Sequence[M]) -> tuple[list[M], str]:
    """The measurements to summarise, and the ``[q/n]`` (or ``noisy``) tag saying which they are."""
    quiet = [m for m in items if m.other_cores <= results.options.max_other_load]
    if quiet:
        return quiet, f"[{len(quiet)}/{len(items)}]"
    return list(items), f"[noisy {len(items)}/{len(items)}]"


def of(items: Iterable[M], system: str, profile: str | None = None) -> list[M]:
    return [m for m in items if m.system == system and (profile is None or m.profile == profile)]


def median(results: Results, items: Sequence[M], value: Callable[[M], float]) -> float | None:
    """The median of ``value`` over the measurements used; None when there are none."""
    if not items:
        return None
    chosen, _ = used(results, items)
    return statistics.median(value(m) for m in chosen)


def median_cell(results: Results, items: Sequence[M], value: Callable[[M], float], fmt: str = "{:,.0f}") -> str:
    if not items:
        return "-"
    chosen, tag = used(results, items)
    return f"{fmt.format(statistics.median(value(m) for m in chosen))} {tag}"


def latency(results: Results, rts: Sequence[RoundTrip]) -> tuple[float, float] | None:
    """p50 and p99 (ms) of every round trip of the rounds used, pooled; None when there are none."""
    if not rts:
        return None
    chosen, _ = used(results, rts)
    pooled = [ms for rt in chosen for ms in rt.ms]
    return percentile(pooled, 50), percentile(pooled, 99)


def latency_cell(results: Results, rts: Sequence[RoundTrip]) -> str:
    if not (pair := latency(results, rts)):
        return "-"
    return f"{pair[0]:.1f} / {pair[1]:.1f} ms {used(results, rts)[1]}"
