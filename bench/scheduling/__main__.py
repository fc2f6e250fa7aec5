"""``python -m bench.scheduling``: run the parts asked for, printing each part's tables as it ends."""

from __future__ import annotations

import argparse
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.common import machine_facts, raise_nofile
from bench.harness.processes import REPO
from bench.scheduling import concurrency, drain, fairness, priority, rate

PARTS = ("priority", "concurrency", "rate", "fairness", "mixed")


class Rendered(Protocol):
    def render(self) -> str: ...


@dataclass(frozen=True)
class Options:
    parts: tuple[str, ...] = PARTS
    priority: priority.Options = field(default_factory=priority.Options)
    concurrency: concurrency.Options = field(default_factory=concurrency.Options)
    rate: rate.Options = field(default_factory=rate.Options)
    fairness: fairness.Options = field(default_factory=fairness.Options)
    mixed: drain.Options = field(default_factory=drain.Options)


def runners(options: Options) -> dict[str, Callable[[], Rendered]]:
    return {
        "priority": lambda: priority.run(options.priority),
        "concurrency": lambda: concurrency.run(options.concurrency),
        "rate": lambda: rate.run(options.rate),
        "fairness": lambda: fairness.run(options.fairness),
        "mixed": lambda: drain.run(options.mixed),
    }


def run(options: Options, out: Callable[[str], None] = print) -> tuple[dict[str, Any], dict[str, str]]:
    """Each part of ``options.parts`` in turn: (results by part, failures by part); a part that fails is
    reported and the others still run."""
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for name in options.parts:
        try:
            results[name] = runners(options)[name]()
        except Exception:  # one part failing must not hide the others' numbers
            failures[name] = traceback.format_exc()
            out(f"### {name}: FAILED\n\n```\n{failures[name]}```\n")
            continue
        out(results[name].render() + "\n")
    return results, failures


def _parts(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return names


def parse(argv: list[str] | None = None) -> tuple[Options, Path | None]:
    p = argparse.ArgumentParser(prog="python -m bench.scheduling", description=__doc__)
    p.add_argument("--only", type=_parts, default=PARTS, help=f"comma-separated, of: {', '.join(PARTS)}")
    p.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    d = Options()
    g = p.add_argument_group("1. priority")
    g.add_argument("--priority-backlog", type=int, default=d.priority.backlog, help="priority-0 jobs due")
    g.add_argument("--priority-submits", type=int, default=d.priority.submits, help="priority-9 submits measured")
    g.add_argument("--priority-task-ms", type=float, default=d.priority.task_ms)
    g.add_argument("--priority-gap-ms", type=float, default=d.priority.gap_ms, help="mean random pause")
    g = p.add_argument_group("2. concurrency")
    g.add_argument("--concurrency-jobs", type=int, default=d.concurrency.jobs)
    g.add_argument("--concurrency-workers", type=int, default=d.concurrency.workers)
    g.add_argument("--concurrency-task-ms", type=float, default=d.concurrency.task_ms)
    g = p.add_argument_group("3. rate")
    g.add_argument("--rate-jobs", type=int, default=d.rate.jobs, help="jobs preloaded (50 a second of backlog)")
    g.add_argument("--rate-workers", type=int, default=d.rate.workers)
    g.add_argument("--rate-window", type=float, default=d.rate.window, help="seconds per reported window")
    g.add_argument("--rate-monitor-seconds", type=float, default=d.rate.monitor_seconds)
    g = p.add_argument_group("4. fairness")
    g.add_argument("--fairness-backlog", type=int, default=d.fairness.backlog, help="tenant A's jobs")
    g.add_argument("--fairness-submits", type=int, default=d.fairness.submits, help="tenant B's jobs")
    g.add_argument("--fairness-task-ms", type=float, default=d.fairness.task_ms)
    g = p.add_argument_group("5. mixed (drain)")
    g.add_argument("--drain-jobs", type=int, default=d.mixed.jobs)
    g.add_argument("--drain-rounds", type=int, default=d.mixed.rounds, help="0: only the --baseline comparison")
    g.add_argument("--baseline", type=Path, help="a checkout of the code before issue #21 (its bench.peers drain)")
    g.add_argument("--baseline-rounds", type=int, default=d.mixed.baseline_rounds)
    ns = p.parse_args(argv)
    options = Options(
        parts=ns.only,
        priority=priority.Options(ns.priority_backlog, ns.priority_submits, ns.priority_task_ms, ns.priority_gap_ms),
        concurrency=concurrency.Options(ns.concurrency_jobs, ns.concurrency_workers, ns.concurrency_task_ms),
        rate=rate.Options(ns.rate_jobs, ns.rate_workers, ns.rate_window, ns.rate_monitor_seconds),
        fairness=fairness.Options(ns.fairness_backlog, ns.fairness_submits, ns.fairness_task_ms),
        mixed=drain.Options(ns.drain_jobs, ns.drain_rounds, ns.baseline, ns.baseline_rounds),
    )
    return options, ns.out


def header() -> str:
    """The code measured (its commit, and any file changed since) and the machine."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                             capture_output=True, text=True).stdout.split("\n")  # fmt: skip
    dirty = [line[3:] for line in changed if line.strip()]
    code = commit.stdout.strip() or "?"
    if dirty:
        code += f" with uncommitted changes to {', '.join(dirty)}"
    facts = ", ".join(f"{k} {v}" for k, v in machine_facts().items())
    return f"## bench.scheduling at {code} ({REPO})\n\n{facts}\n"


def main(argv: list[str] | None = None) -> int:
    options, out_path = parse(argv)
    raise_nofile()
    report: list[str] = []

    def out(text: str) -> None:
        print(text, flush=True)
        report.append(text)

    out(header())
    _, failures = run(options, out)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text("\n".join(report))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
