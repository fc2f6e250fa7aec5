"""What a submit that no worker is handed costs while the workers are idle: the claims its notice sets off.

Usage: .venv/bin/python -m bench.idle_notices [--workers 8] [--submits 50] [--workloads limited,full,deferred,plain]

A job that a script leaves in its lane (a limited task's, a deferred one, a lane a freed concurrency slot lets run)
is announced by a wake-up notice. Announced to every worker, it had each idle worker claim, all but one taking
nothing; named for one registered worker (shared/keys.py "Named claims"), it has that one claim. For each
workload, a redis-server of its own, an API and ``--workers`` idle workers at the production defaults (2 s poll,
10 slots), running ``bench.scheduling.tasks``; ``--submits`` tasks are submitted one at a time over HTTP, and
Redis's MONITOR counts the claim calls and every command (those run inside scripts included) until all have
ended (the bench's own reads left out). Workloads:

- ``limited``: ``three_at_once`` (a concurrency limit of 3, never handed off) taking no time, 20 ms apart: the
  limit never full.
- ``full``: ``three_at_once`` taking 0.2 s, 1 ms apart: the limit full, each freed slot waking the parked lane.
- ``deferred``: ``noop`` due 0.2 s after its submit, 20 ms apart.
- ``plain``: ``noop``, 20 ms apart: handed off (no notice), for reference.

To compare with an older revision, run this file in a checkout of it: ``git worktree add --detach /tmp/base <rev>
&& cp bench/idle_notices.py bench/busy_notices.py /tmp/base/bench/ && cd /tmp/base && .venv/bin/python -m
bench.idle_notices`` (with ``.venv`` linked there).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import redis

from bench.busy_notices import is_claim, state, submit
from bench.common import OtherLoad, bench_scope, table
from bench.harness.processes import relay_env, start_api, start_worker, wait_until
from bench.http_submit import monitored
from shared import keys
from shared.settings import Settings


@dataclass(frozen=True)
class Workload:
    task: str
    body: dict[str, Any]
    pause: float  # seconds between submits


WORKLOADS = {
    "limited": Workload("three_at_once", {"kwargs": {"seconds": 0}}, 0.02),
    "full": Workload("three_at_once", {"kwargs": {"seconds": 0.2}}, 0.001),
    "deferred": Workload("noop", {"delay_seconds": 0.2}, 0.02),
    "plain": Workload("noop", {}, 0.02),
}


def main(argv: list[str] | None = None) -> str:
    """Run the measurement; print and return its report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--submits", type=int, default=50)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args(argv)
    other = OtherLoad()
    rows = [[name, args.workers, args.submits, *measure(WORKLOADS[name], args.workers, args.submits)]
            for name in args.workloads.split(",")]  # fmt: skip
    headers = ["workload", "idle workers", "submits", "seconds", "claim calls", "claims per submit",
               "commands run per submit"]  # fmt: skip
    report = f"{table(headers, rows)}\n\nother load: {other.cores():.2f} cores"
    print(report)
    return report


def measure(workload: Workload, workers: int, submits: int) -> list[str]:
    """Seconds from the first submit to the last task's success, claim calls, and the two ratios."""
    with bench_scope() as bench:
        server = bench.redis()
        env = relay_env(server.url, RELAY_TASK_MODULES="bench.scheduling.tasks")
        api, base = start_api(bench.log_dir, env)
        bench.own(api)
        for _ in range(workers):
            bench.own(start_worker(bench.log_dir, env))
        # Every worker registered (its first claim, at start), so a submit finds them all idle. The bench's own
        # reads go over this one connection, whose commands are left out of the count.
        client = redis.Redis(port=server.port, single_connection_client=True)
        own = f" {client.client_info()['addr']}]"
        registry = keys.idle_registry(Settings(redis_url=server.url).queue_name)
        wait_until(lambda: client.hlen(registry) == workers, 20, "every worker to register")
        monitor_file = bench.log_dir / "monitor.txt"
        with monitor_file.open("w") as out:
            monitor = subprocess.Popen(["redis-cli", "-p", str(server.port), "monitor"], stdout=out)
            wait_until(lambda: monitor_file.read_text().startswith("OK"), 10, "MONITOR to start")
            started = time.monotonic()
            ids = []
            for _ in range(submits):
                ids.append(submit(base, {"task": workload.task, **workload.body}))
                time.sleep(workload.pause)
            results = [keys.result(task_id) for task_id in ids]
            wait_until(lambda: client.exists(*results) == len(ids), 60, "every task to end", interval=0.01)
            elapsed = time.monotonic() - started
            monitor.terminate()
            monitor.wait(5)
        client.close()
        assert all(state(base, task_id) == "succeeded" for task_id in ids)
        lines = [line for line in monitor_file.read_text().splitlines() if own not in line]
        counted = bench.log_dir / "monitor-relay.txt"
        counted.write_text("\n".join(lines))
        claims = sum(1 for line in lines if is_claim(line))
        sent, scripted = monitored(counted)
        commands = sum(sent.values()) + sum(scripted.values())
        return [f"{elapsed:.1f}", str(claims), f"{claims / submits:.2f}", f"{commands / submits:.1f}"]


if __name__ == "__main__":
    main()
