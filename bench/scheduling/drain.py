"""Part 5: what named queues and priorities cost a drain, and today's plain drain against the code before #21.

(a) ``noop`` jobs on the `default` queue, no priority, tenant or limit (one lane); (b) as many ``noop`` jobs spread
over queues q1, q2 and q3 with priorities 0-9 (30 lanes), the worker serving all three. Each round preloads the
jobs while a fresh worker (RELAY_WORKER_CONCURRENCY 10, the default) is stopped, resumes it, and times until
nothing waits or runs; rounds alternate a and b. Every job's result is checked afterwards.

The comparison with the code before issue #21 runs ``bench.peers`` (Relay only: its no-op ``echo`` drain, one
worker of concurrency 10) on that checkout's code and on this one's, alternately. Both runs use one harness, the
older checkout's ``bench/`` copied to a directory of its own, so only Relay's code differs between them (this
checkout's ``bench.peers`` has changed since, and its worker puts this checkout on ``PYTHONPATH``): each run has
the harness, then the code measured, on ``PYTHONPATH``, which wins over the virtualenv's editable install (the
checkouts share one virtualenv); where each run imported them from is checked and reported.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import table
from bench.harness.processes import REPO
from bench.scheduling.stage import Conditions, Job, plural, preload, stage

NAMED = ("q1", "q2", "q3")
# Its log line of the no-op drain, as bench.peers has written it before and since it added a second workload.
DRAIN_LINE = re.compile(r"drain (?:\(no-op\) )?x1: ([\d,.]+) jobs/s, verified (\d+)/(\d+)")


@dataclass(frozen=True)
class Options:
    jobs: int = 10_000
    rounds: int = 3
    baseline: Path | None = None  # a checkout of the code before issue #21 (e.g. d29c49c)
    baseline_rounds: int = 3
    seed: int = 1


@dataclass
class Result:
    options: Options
    plain: list[float] = field(default_factory=list)  # jobs/s per round, (a)
    named: list[float] = field(default_factory=list)  # (b)
    before: list[float] = field(default_factory=list)  # bench.peers in the baseline checkout
    today: list[float] = field(default_factory=list)  # ... and in this one
    code: dict[str, str] = field(default_factory=dict)  # "before"/"today" -> the checkout measured, and its commit
    harness: str = ""
    conditions: Conditions = field(default_factory=Conditions)

    def render(self) -> str:
        o = self.options
        lines = ["### 5. Drain: named queues and priorities against one plain queue"]
        if self.plain:
            ratio = statistics.median(self.named) / statistics.median(self.plain)
            rows = [
                ["(a) `default` queue, one lane", _rounds(self.plain), f"{statistics.median(self.plain):,.0f}", ""],
                ["(b) q1-q3, priorities 0-9 (30 lanes)", _rounds(self.named), f"{statistics.median(self.named):,.0f}",
                 f"b / a = {ratio:.2f} (target >= 0.8: {'met' if ratio >= 0.8 else 'missed'})"],
            ]  # fmt: skip
            lines += [
                "",
                table(["drain of no-op jobs, one worker", "jobs/s per round", "median", ""], rows),
                "",
                f"{o.jobs:,} `noop` jobs per round, preloaded while a fresh worker (RELAY_WORKER_CONCURRENCY 10) was"
                f" stopped; {plural(o.rounds, 'round')} each, alternating (a) and (b); every result checked.",
            ]
        if self.before:
            before, today = statistics.median(self.before), statistics.median(self.today)
            verdict = "met" if today / before >= 0.95 else "missed"
            rows = [
                ["before issue #21", _rounds(self.before), f"{before:,.0f}", ""],
                ["today", _rounds(self.today), f"{today:,.0f}",
                 f"today / before = {today / before:.2f} (target >= 0.95: {verdict})"],
            ]  # fmt: skip
            lines += [
                "",
                table(["`bench.peers` drain (Relay only), one worker", "jobs/s per round", "median", ""], rows),
                "",
                f"{o.jobs:,} no-op `echo` jobs per round (bench.peers: preloaded while the worker is stopped,"
                " concurrency 10, every result and `end` event checked), the two alternating, each round its own"
                f" redis-server; one harness for both ({self.harness}). Code: "
                + "; ".join(f"{k}: {v}" for k, v in self.code.items())
                + ".",
            ]
        return "\n".join([*lines, self.conditions.line()])


def _rounds(values: list[float]) -> str:
    return " / ".join(f"{v:,.0f}" for v in values)


def run(options: Options) -> Result:
    result = Result(options, conditions=Conditions())
    rng = random.Random(options.seed)
    plain = [Job("noop")] * options.jobs
    named = [Job("noop", queue=NAMED[i % 3], priority=rng.randrange(10)) for i in range(options.jobs)]
    for _ in range(options.rounds):
        result.plain.append(drain(plain, "default"))
        result.named.append(drain(named, ",".join(NAMED)))
    if options.baseline is not None:
        _compare(options, result)
    result.conditions.close()
    return result


def drain(jobs: list[Job], queues: str) -> float:
    """Jobs/s of one worker serving ``queues`` through ``jobs``, preloaded while it was stopped."""
    with stage() as stage_:
        [worker] = stage_.start_workers(1, RELAY_QUEUES=queues)
        worker.pause()
        ids = preload(stage_, jobs)
        began = time.perf_counter()
        worker.resume()
        seconds = stage_.wait_drained(timeout=len(jobs) / 100 + 60) - began
        stage_.results(ids)  # every one succeeded
    return len(jobs) / seconds


def _compare(options: Options, result: Result) -> None:
    """``bench.peers``' drain on the baseline's code and on this checkout's, alternately, with one harness."""
    assert options.baseline is not None
    baseline = options.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="relay-peers-harness-") as tmp:
        harness = Path(tmp)
        shutil.copytree(baseline / "bench", harness / "bench", ignore=shutil.ignore_patterns("__pycache__"))
        trees = {"before": baseline, "today": REPO}
        result.code = {name: _code_of(harness, tree) for name, tree in trees.items()}
        result.harness = f"bench.peers from {_commit(baseline)}"
        for _ in range(options.baseline_rounds):
            result.before.append(peers_drain(harness, trees["before"], options.jobs))
            result.today.append(peers_drain(harness, trees["today"], options.jobs))


def _env(harness: Path, tree: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": f"{harness}:{tree}"}


def _commit(tree: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    return f"{tree} at {done.stdout.strip() or '?'}"


def _code_of(harness: Path, tree: Path) -> str:
    """``tree`` and its commit, once checked that a run imports Relay from it and the harness from ``harness``."""
    probe = "import bench.peers, worker; print(worker.__file__); print(bench.peers.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=harness, env=_env(harness, tree), capture_output=True,
                          text=True, check=True)  # fmt: skip
    relay, bench = (Path(line) for line in done.stdout.split())
    if not relay.is_relative_to(tree) or not bench.is_relative_to(harness):
        raise RuntimeError(f"a run for {tree} would import Relay from {relay} and bench.peers from {bench}")
    return _commit(tree)


def peers_drain(harness: Path, tree: Path, jobs: int) -> float:
    """One ``bench.peers`` drain of Relay (and nothing else) on the code of checkout ``tree``; its jobs/s."""
    argv = [sys.executable, "-m", "bench.peers", "--systems", "relay", "--jobs", str(jobs), "--rounds", "1",
            "--rt-requests", "0", "--rt-short-requests", "0", "--idle-seconds", "0", "--load-tasks", "0",
            "--scale-workers", "", "--wait-quiet", "0"]  # fmt: skip
    done = subprocess.run(argv, cwd=harness, env=_env(harness, tree), capture_output=True, text=True, timeout=900)
    found = DRAIN_LINE.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"bench.peers on {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    per_second, verified, total = found.groups()
    if verified != total:
        raise RuntimeError(f"bench.peers on {tree}: only {verified} of {total} jobs verified")
    return float(per_second.replace(",", ""))
