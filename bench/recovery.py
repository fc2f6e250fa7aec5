"""How soon a SIGKILLed worker's job runs again elsewhere (issue #9's target: within 15 s, job timeout 300 s).

Each round: a private redis-server, an API, a victim worker that picks up a ``sleep`` task, then an idle
survivor; the victim is SIGKILLed and the clock runs until the task's next ``started`` event (its ``ts``).
Leases are Relay's default (10 s) unless ``--leases`` asks for others; the job timeout stays 300 s.

    .venv/bin/python -m bench.recovery [--rounds 5] [--leases 10,5] [--wait 400]

``--wait`` bounds the wait for the task's end (default: three leases + 30 s); the code before leases (commit
ffe2490) needs 400, with this file copied into a checkout of it and ``PYTHONPATH`` set to that checkout.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time

from bench.common import OtherLoad, bench_scope, start_api_factory, table
from bench.harness.client import read_events, submit_ok, wait_state
from bench.harness.processes import relay_env, start_worker


def one_round(lease: float, wait: float | None = None) -> float:
    """Seconds from the SIGKILL to the job's start on another worker."""
    with bench_scope() as bench:
        server = bench.redis()
        env = relay_env(server.url, RELAY_LEASE_SECONDS=str(lease), RELAY_JOB_TIMEOUT_SECONDS="300")
        env |= {"RELAY_POLL_DELAY_SECONDS": "2.0", "RELAY_WORKER_METRICS_PORT": "0"}  # defaults, not the tests'
        victim = bench.own(start_worker(bench.log_dir, env))
        _, base = start_api_factory(bench, env)
        task_id = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 1.0, "steps": 1}})
        wait_state(base, task_id, {"running"})
        bench.own(start_worker(bench.log_dir, env))
        victim.send(signal.SIGKILL)
        killed_at = time.time()
        victim.wait(10)
        wait_state(base, task_id, {"succeeded"}, timeout=wait or lease * 3 + 30)
        starts = [e["ts"] for e in read_events(base, task_id) if e["type"] == "started"]
        if len(starts) != 2:
            raise RuntimeError(f"expected two starts, got {starts}")
        return float(starts[1]) - killed_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--leases", default="10")
    parser.add_argument("--wait", type=float, default=None, help="seconds to wait for the task's end")
    ns = parser.parse_args()
    rows = []
    for lease in (float(x) for x in ns.leases.split(",")):
        load = OtherLoad()
        seconds = [one_round(lease, ns.wait) for _ in range(ns.rounds)]
        rows.append(
            [f"{lease:g} s", "300 s", ns.rounds, f"{statistics.median(seconds):.2f} s", f"{max(seconds):.2f} s",
             f"{load.cores():.2f}"]
        )  # fmt: skip
    print(table(["lease", "job timeout", "rounds", "median", "worst", "other load (cores)"], rows))


if __name__ == "__main__":
    main()
