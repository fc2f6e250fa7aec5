"""What a submit costs while every worker is busy: the claims its wake-up notice sets off.

Usage: .venv/bin/python -m bench.busy_notices [--workers 4] [--submits 50]

Each enqueue that hands nothing off publishes a wake-up notice that reaches every worker of the queue. Here
``--workers`` workers of one slot each (``RELAY_WORKER_CONCURRENCY=1``) are all busy with a long ``sleep`` task,
and ``--submits`` ``echo`` tasks are submitted one at a time, 20 ms apart, as a backlog arrives. Redis's MONITOR
counts the claim calls (claim.lua, named by its request key) and every command, those run inside scripts
included. A worker that claims on a notice with no free slot takes nothing: one claim per worker per submit.
Workers poll at the production default (2 s), so a few claims are their timers'.

To compare with an older revision, run this file in a checkout of it:
``git worktree add /tmp/base <rev> && cp bench/busy_notices.py /tmp/base/bench/ && cd /tmp/base &&
.venv/bin/python -m bench.busy_notices`` (with ``.venv`` linked there).
"""

from __future__ import annotations

import argparse
import subprocess
import time

import httpx

from bench.common import OtherLoad, bench_scope, table
from bench.harness.processes import relay_env, start_api, start_worker, wait_until
from bench.http_submit import monitored

CLAIM_KEY_PART = "claim-request:"  # in claim.lua's third key, the worker's claim request (shared/keys.py)


def main(argv: list[str] | None = None) -> str:
    """Run the measurement; print and return its report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--submits", type=int, default=50)
    args = parser.parse_args(argv)
    other = OtherLoad()
    with bench_scope() as bench:
        server = bench.redis()
        env = relay_env(server.url, RELAY_WORKER_CONCURRENCY="1")
        api, base = start_api(bench.log_dir, env)
        bench.own(api)
        for _ in range(args.workers):
            bench.own(start_worker(bench.log_dir, env))
        long_ids = [
            submit(base, {"task": "sleep", "kwargs": {"seconds": 3600, "steps": 1}}) for _ in range(args.workers)
        ]
        wait_until(lambda: all(state(base, i) == "running" for i in long_ids), 20, "every worker to be busy")
        monitor_file = bench.log_dir / "monitor.txt"
        with monitor_file.open("w") as out:
            monitor = subprocess.Popen(["redis-cli", "-p", str(server.port), "monitor"], stdout=out)
            wait_until(lambda: monitor_file.read_text().startswith("OK"), 10, "MONITOR to start")
            started = time.monotonic()
            for _ in range(args.submits):
                submit(base, {"task": "echo"})
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            time.sleep(0.5)  # the last notices' claims, if any
            monitor.terminate()
            monitor.wait(5)
        claims = sum(1 for line in monitor_file.read_text().splitlines() if is_claim(line))
        sent, scripted = monitored(monitor_file)
        sent_total = sum(sent.values())
        rows = [
            [
                args.workers,
                args.submits,
                f"{elapsed:.1f}",
                claims,
                f"{sent_total / args.submits:.1f}",
                f"{(sent_total + sum(scripted.values())) / args.submits:.1f}",
            ]
        ]
        headers = [
            "busy workers",
            "submits",
            "seconds",
            "claim calls",
            "commands sent per submit",
            "commands run per submit",
        ]
    report = f"{table(headers, rows)}\n\nother load: {other.cores():.2f} cores"
    print(report)
    return report


def is_claim(line: str) -> bool:
    return '"EVALSHA"' in line.upper() and CLAIM_KEY_PART in line


def submit(base: str, body: dict[str, object]) -> str:
    response = httpx.post(f"{base}/tasks", json=body, timeout=10)
    response.raise_for_status()
    task_id: str = response.json()["id"]
    return task_id


def state(base: str, task_id: str) -> str:
    state: str = httpx.get(f"{base}/tasks/{task_id}", timeout=10).json()["state"]
    return state


if __name__ == "__main__":
    main()
