"""Part 3: a task limited to 50 starts a second, a 30 s backlog, four worker processes.

``fifty_per_second`` jobs are preloaded while the workers are stopped, then all four resume. From the jobs' own
start times: starts per second in every ``window`` seconds from the first start (target: within 10 % of 50 in each).

What the rate-held workers cost Redis, over 60 % of the expected run from 15 % in (nothing of the bench's own runs
then: it only sleeps, and its INFO calls are left out): every command Redis executed (INFO commandstats, commands
run inside scripts included) per second per worker, and per job started; then, for a short MONITOR window right
after, how many claim-script calls each worker made per second (a worker that polled busily would claim far more
often than starts are allowed); and ``relay_claim_waits_total{reason="rate"}`` from the workers' metrics.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.common import table
from bench.scheduling.stage import Conditions, Job, Stage, Worker, plural, preload, stage
from bench.scheduling.tasks import RATE
from shared import scripts


@dataclass(frozen=True)
class Options:
    jobs: int = 1_500
    workers: int = 4
    window: float = 5.0
    monitor_seconds: float = 2.0


@dataclass
class Held:
    """What the workers cost Redis while rate-held."""

    seconds: float
    since: float  # the window's start, on the wall clock (the jobs' start times are on it)
    commands: Counter[str]
    claims: float  # claim-script calls per second per worker (MONITOR)
    monitored: float  # seconds of MONITOR
    scripts: Counter[str]  # script calls per second, all workers, by script (MONITOR)
    claim_waits: float  # relay_claim_waits_total{reason="rate"} in the window, all workers
    started: int = 0  # jobs started in the window


@dataclass
class Result:
    options: Options
    starts: list[float]
    held: Held
    conditions: Conditions = field(default_factory=Conditions)

    def windows(self) -> list[tuple[float, int, float]]:
        """(offset of the window from the first start, starts in it, its length) for each window."""
        first, last, size = self.starts[0], self.starts[-1], self.options.window
        counts = Counter(int((s - first) // size) for s in self.starts)
        return [
            (k * size, counts[k], min(size, last - (first + k * size) + 1 / RATE))  # the last one may be partial
            for k in range(max(counts) + 1)
        ]

    def render(self) -> str:
        o, h = self.options, self.held
        rows = []
        for offset, n, length in self.windows():
            per_second = n / length
            verdict = "within" if abs(per_second - RATE) <= RATE / 10 else "outside"
            if length < o.window / 2:
                verdict = "- (too short to judge)"
            partial = f" (partial: {length:.2f} s)" if length < o.window - 1e-6 else ""
            rows.append([f"{offset:g}-{offset + o.window:g} s{partial}", n, f"{per_second:.1f}", verdict])
        total = sum(h.commands.values())
        per_worker = total / h.seconds / o.workers
        top = ", ".join(f"{name} {calls / h.seconds / o.workers:.1f}" for name, calls in h.commands.most_common(6))
        script_calls = ", ".join(f"{name} {calls:.1f}" for name, calls in h.scripts.most_common())
        cost = [
            ["Redis commands/s per worker (all commands, inside scripts too)", f"{per_worker:.1f}"],
            ["... the most frequent, per worker per second", top],
            ["Redis commands per job started", f"{total / max(h.started, 1):.1f}"],
            ["claim-script calls/s per worker (MONITOR)", f"{h.claims:.1f}"],
            ["claim-script calls per start allowed (MONITOR, all workers)", f"{h.claims * o.workers / RATE:.1f}"],
            ["script calls/s, all workers (MONITOR)", script_calls],
            [
                'lanes held back by the rate (relay_claim_waits_total{reason="rate"}), per second, all workers',
                f"{h.claim_waits / h.seconds:.1f}",
            ],
        ]
        workers = plural(o.workers, "worker process", "worker processes")
        return "\n".join([
            f"### 3. Rate: `Rate({RATE}, per_seconds=1)` across {workers}",
            "",
            table(["window from the first start", "starts", "starts/s", f"target {RATE} +-10 %"], rows),
            "",
            table(["while rate-held", "value"], cost),
            "",
            f"{workers} (RELAY_WORKER_CONCURRENCY 10 each), {o.jobs:,} `fifty_per_second` jobs"
            f" ({o.jobs / RATE:g} s of work at the limit) preloaded while the workers were stopped, then resumed"
            f" together. Redis cost measured over {h.seconds:.1f} s within the run ({h.started} starts),"
            f" claims by MONITOR over the {h.monitored:.1f} s after it. An idle worker costs about 1.5 commands/s"
            " (BENCHMARKS.md).",
            self.conditions.line(),
        ])  # fmt: skip


def run(options: Options) -> Result:
    conditions = Conditions()
    with stage() as stage_:
        workers = stage_.start_workers(options.workers)
        for worker in workers:
            worker.pause()
        ids = preload(stage_, [Job("fifty_per_second")] * options.jobs)
        for worker in workers:
            worker.resume()
        held = _held(stage_, workers, options, began=time.monotonic())
        stage_.wait_drained(timeout=2 * options.jobs / RATE + 60)
        runs = stage_.results(ids)
    starts = sorted(r["started"] for r in runs)
    held.started = sum(1 for s in starts if held.since <= s < held.since + held.seconds)
    return Result(options, starts, held, conditions.close())


def _held(stage_: Stage, workers: list[Worker], o: Options, began: float) -> Held:
    """The Redis cost over 60 % of the expected run from 15 % in, then a MONITOR of the claims (within the run)."""
    expected = o.jobs / RATE
    time.sleep(max(0.0, began + 0.15 * expected - time.monotonic()))
    waits = sum(w.claim_waits().get("rate", 0.0) for w in workers)
    before, at, wall = stage_.commands(), time.monotonic(), time.time()
    time.sleep(0.6 * expected)
    after, seconds = stage_.commands(), time.monotonic() - at
    waits = sum(w.claim_waits().get("rate", 0.0) for w in workers) - waits
    commands = Counter({name: calls - before.get(name, 0) for name, calls in after.items()})
    monitored = min(o.monitor_seconds, 0.15 * expected)
    calls = _monitor(stage_.server.url, monitored)
    claims = calls.get("claim", 0) / o.workers
    return Held(seconds, wall, +commands, claims, monitored, calls, waits)


_SCRIPT_OF = {hashlib.sha1(scripts.source(n).encode()).hexdigest(): n for n in scripts.SCRIPT_NAMES}


def _monitor(url: str, seconds: float) -> Counter[str]:
    """Script calls per second by script name, from MONITOR over ``seconds``."""
    counts: Counter[str] = Counter()
    client = redis.Redis.from_url(url)
    stop = time.monotonic() + seconds

    def listen() -> None:
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            for entry in monitor.listen():
                command: Any = entry.get("command", "")
                if command.upper().startswith("EVALSHA "):
                    counts[_SCRIPT_OF.get(command.split()[1].lower(), "other")] += 1
                if time.monotonic() >= stop:
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    thread.join(seconds + 5)
    client.close()
    return Counter({name: n / seconds for name, n in counts.items()})
