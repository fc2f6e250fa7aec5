"""How promptly an idle worker starts a deferred task at its due time, and notices an abort (issue #13).

One private redis-server, one API, ``--workers`` workers (1 unless given) at Relay's defaults (idle between tasks:
nothing polls faster than ``RELAY_POLL_DELAY_SECONDS``, 2 s); with several, one watches a deferred task's due time
and the others' claims leave it to that one (shared/keys.py "Watched due times"). Deferred: ``--tasks`` echo
tasks, each due at its own moment 2-6 s ahead, submitted while the workers idle; lateness = the ``started`` event's
``ts`` minus the due time.
Abort: ``--tasks`` running ``sleep`` tasks each aborted by ``DELETE``; delay = the ``aborted`` event's ``ts``
minus the moment the DELETE was answered. Also counts every Redis command meanwhile (the bench's own polling included:
the idle cost of a worker alone is measured by ``bench.peers``).

    .venv/bin/python -m bench.timeliness [--tasks 20] [--workers 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time

import httpx
import redis

from bench.common import OtherLoad, bench_scope, percentile, start_api_factory, table
from bench.harness.client import read_events, submit_ok, wait_state
from bench.harness.processes import relay_env, start_worker


def commands(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def deferred_lateness(base: str, n: int) -> list[float]:
    late = []
    for _ in range(n):
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=random.uniform(2.0, 6.0))
        task_id = submit_ok(base, {"task": "echo", "run_at": due.isoformat()})
        wait_state(base, task_id, {"succeeded"}, timeout=30)
        started = next(e["ts"] for e in read_events(base, task_id) if e["type"] == "started")
        late.append((started - due.timestamp()) * 1000)
    return late


def abort_delay(base: str, n: int) -> list[float]:
    delays = []
    for _ in range(n):
        task_id = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 60, "steps": 60}})
        wait_state(base, task_id, {"running"})
        httpx.delete(f"{base}/tasks/{task_id}", timeout=10).raise_for_status()
        asked = time.time()
        aborted = next(e["ts"] for e in read_events(base, task_id) if e["type"] == "aborted")
        delays.append((aborted - asked) * 1000)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    ns = parser.parse_args()
    with bench_scope() as bench:
        server = bench.redis()
        env = relay_env(server.url) | {"RELAY_POLL_DELAY_SECONDS": "2.0", "RELAY_WORKER_METRICS_PORT": "0"}
        for _ in range(ns.workers):
            bench.own(start_worker(bench.log_dir, env))
        _, base = start_api_factory(bench, env)
        load = OtherLoad()
        before, started = commands(server.url), time.monotonic()
        late = deferred_lateness(base, ns.tasks)
        delays = abort_delay(base, ns.tasks)
        rows = [
            ["deferred start, after its due time", ns.tasks, *(f"{percentile(late, p):.1f} ms" for p in (50, 99)),
             f"{max(late):.1f} ms"],
            ["abort, from DELETE to `aborted`", ns.tasks, *(f"{percentile(delays, p):.1f} ms" for p in (50, 99)),
             f"{max(delays):.1f} ms"],
        ]  # fmt: skip
        print(table(["what", "n", "p50", "p99", "worst"], rows))
        per_task = (commands(server.url) - before) / (2 * ns.tasks)
        print(f"\n{per_task:.1f} Redis commands per task, everything counted (this bench's GET polling while it"
              f" waits, the sleep tasks' progress events, the {ns.workers} idle worker(s)),"
              f" {time.monotonic() - started:.0f} s,"
              f" other load {load.cores():.2f} cores")  # fmt: skip


if __name__ == "__main__":
    main()
