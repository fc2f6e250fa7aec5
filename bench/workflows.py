"""What a workflow's orchestration costs per step: a chain of N no-op steps against the same N tasks submitted one
by one, in Redis commands and milliseconds per step.

Usage: .venv/bin/python -m bench.workflows [--steps 200] [--rounds 3] [--workers 1]

It starts a private redis-server, ``--workers`` workers (one by default) and one API, and runs, each ``--rounds``
times (the median is shown):

- ``chain``: one ``POST /workflows`` of ``add(0, 1) | add.s(1) | ...`` (N steps), read to its ``workflow_end``;
  each step's end releases the next inside the commit script (docs/workflows.md);
- ``single submits, chained by the client``: N ``POST /tasks`` of ``add``, each streamed back to its ``end`` on
  its own response, its result passed into the next submit: what a client does without workflows;
- ``group``: one ``POST /workflows`` of a map of N ``add`` steps, read to its ``workflow_end``;
- ``single submits, back to back``: N ``POST /tasks`` without waiting, then every result: the throughput baseline.

Redis commands are ``INFO commandstats`` calls (commands run inside Relay's scripts count one each, and so does
the script call), counted from a ``CONFIG RESETSTAT`` to the end of the run, minus what the idle worker and API
issue in as long (measured before). No timing is asserted: the numbers are for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import redis

from bench.common import OtherLoad, bench_scope, machine_facts, start_api_factory, table
from bench.harness.processes import relay_env, start_worker

NDJSON = {"Accept": "application/x-ndjson"}


@dataclass(frozen=True)
class Run:
    """One measured run: its wall time and the Redis commands it cost (idle traffic taken out)."""

    seconds: float
    commands: float


def commands(client: redis.Redis) -> int:
    """Every command Redis ran since the last ``CONFIG RESETSTAT``."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values() if isinstance(v, dict))


def idle_rate(client: redis.Redis, seconds: float = 3.0) -> float:
    """Commands per second Redis runs with nothing submitted (the worker's polls, presence, the API's reads)."""
    client.config_resetstat()
    time.sleep(seconds)
    return (commands(client) - 1) / seconds  # the INFO call itself counts once


def measured(client: redis.Redis, idle: float, work: Callable[[], None]) -> Run:
    client.config_resetstat()
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    return Run(seconds, commands(client) - 1 - idle * seconds)


def read_to(http: httpx.Client, method: str, path: str, final: str, body: dict[str, object]) -> list[str]:
    """A streamed request's lines until the event of type ``final``."""
    lines = []
    with http.stream(method, path, headers=NDJSON, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line:
                lines.append(line)
            if f'"type":"{final}"' in line:
                break
    return lines


def chain(http: httpx.Client, steps: int) -> None:
    canvas = {"chain": [{"task": "add", "args": [0, 1]}] + [{"task": "add", "args": [1]}] * (steps - 1)}
    lines = read_to(http, "POST", "/workflows", "workflow_end", {"workflow": canvas})
    assert f'"result":{float(steps)}' in lines[-1], lines[-1]


def group(http: httpx.Client, steps: int) -> None:
    canvas = {"map": "add", "items": list(range(steps)), "args": [1]}
    lines = read_to(http, "POST", "/workflows", "workflow_end", {"workflow": canvas})
    assert '"state":"succeeded"' in lines[-1], lines[-1]


def client_chain(http: httpx.Client, steps: int) -> None:
    value = 0.0
    for _ in range(steps):
        lines = read_to(http, "POST", "/tasks", "end", {"task": "add", "args": [value, 1]})
        result = next(line for line in lines if '"type":"result"' in line)
        value = float(json.loads(result)["data"])
    assert value == steps


def back_to_back(http: httpx.Client, steps: int) -> None:
    ids = [http.post("/tasks", json={"task": "add", "args": [i, 1]}).json()["id"] for i in range(steps)]
    for task_id in ids:
        while http.get(f"/tasks/{task_id}").json()["state"] != "succeeded":
            time.sleep(0.005)


KINDS: dict[str, Callable[[httpx.Client, int], None]] = {
    "chain (one POST /workflows)": chain,
    "single submits, chained by the client": client_chain,
    "group (a map, one POST /workflows)": group,
    "single submits, back to back": back_to_back,
}


def run(steps: int, rounds: int, workers: int = 1) -> str:
    """Every kind, ``rounds`` times each, alternating; the median per step."""
    with bench_scope() as bench:
        server = bench.redis()
        env = relay_env(server.url)
        for _ in range(workers):
            bench.own(start_worker(bench.log_dir, env))
        _, base = start_api_factory(bench, env)
        client = redis.Redis.from_url(server.url)
        others = OtherLoad()
        with httpx.Client(base_url=base, timeout=120) as http:
            for kind in KINDS.values():  # warm up connections, caches and the scripts
                kind(http, 10)
            idle = idle_rate(client)
            runs: dict[str, list[Run]] = {name: [] for name in KINDS}
            for _ in range(rounds):
                for name, kind in KINDS.items():
                    runs[name].append(measured(client, idle, functools.partial(kind, http, steps)))
        other_cores = others.cores()
        client.close()
    rows = []
    for name, measured_runs in runs.items():
        ms = statistics.median(r.seconds for r in measured_runs) * 1000 / steps
        per_step = statistics.median(r.commands for r in measured_runs) / steps
        rows.append([name, steps, f"{ms:.2f}", f"{per_step:.1f}"])
    facts = machine_facts()
    header = f"{steps} steps, {workers} worker(s), median of {rounds} rounds; "
    header += f"idle traffic {idle:.1f} commands/s (taken out); "
    header += f"other load {other_cores:.2f} cores; {facts.get('cpu', '')}".rstrip("; ")
    return header + "\n\n" + table(["run", "steps", "ms per step", "Redis commands per step"], rows)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    output = run(args.steps, args.rounds, args.workers)
    print(output, flush=True)
    return output


if __name__ == "__main__":
    main()
