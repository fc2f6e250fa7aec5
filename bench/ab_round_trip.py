"""Relay's round trip on this tree against another checkout's, request by request: an A/B that the host's noise
cannot tilt.

Runs of ``bench.peers`` one after another differ by 0.5 ms or more at random arrival on this host (the machine's
state drifts between runs), about as much as the changes issue #25 needs to tell apart. Here both trees run at
once, each its own redis-server, API and worker; one client sends each pair of requests to the two in a random
order, each after its own random 0-20 ms pause (or none: ``--max-pause-ms 0``), so both meet the same machine.
The other tree's processes idle meanwhile (its worker's 2 s poll at most). The report gives each tree's p50 / p99
and the median of the per-pair ratios.

    git worktree add --detach /tmp/base <rev>     # and `source scripts/bootstrap.sh dev` there, or run with
    .venv/bin/python -m bench.ab_round_trip --tree /tmp/base --requests 1000 --rounds 3

The other tree runs on this tree's virtualenv with ``PYTHONPATH`` set to it (as ``bench.http_submit --tree``),
so only its code differs, not its packages; the client is this tree's ``relay.client.Client.run()``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import OtherLoad, bench_scope, machine_facts, percentile, table
from bench.harness.processes import relay_env, start_api, start_worker
from relay.client import Client

ECHO_KWARGS = {"message": "hello"}


@dataclass(frozen=True)
class TreeResult:
    """One tree's round trips (ms), over every round."""

    label: str
    samples: list[float]


def _label(tree: Path) -> str:
    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return f"{tree} ({rev.stdout.strip() or '?'}{' + changes' if dirty else ''})"


def measure(trees: list[Path], requests: int, rounds: int, max_pause_ms: float) -> tuple[list[TreeResult], list[float]]:
    """``requests`` pairs per round; returns each tree's samples and the per-pair ratios (second / first)."""
    samples: list[list[float]] = [[] for _ in trees]
    ratios: list[float] = []
    with bench_scope() as bench:
        clients = []
        for tree in trees:
            server = bench.redis()
            env = relay_env(server.url) | {"PYTHONPATH": str(tree.resolve())}  # its api/, shared/, worker/ first
            api, base = start_api(bench.log_dir, env)
            bench.own(api)
            bench.own(start_worker(bench.log_dir, env))
            client = Client(base, timeout=30)
            bench.stack.callback(client.close)
            clients.append(client)
        for client in clients:  # warm-up: connections open, every code path run once
            for _ in range(50):
                client.run_with("echo", [], ECHO_KWARGS)
        for round_ in range(rounds):
            for _ in range(requests):
                order = list(range(len(trees)))
                random.shuffle(order)
                pair = [0.0] * len(trees)
                for index in order:
                    if max_pause_ms > 0:
                        time.sleep(random.uniform(0, max_pause_ms / 1000))
                    start = time.perf_counter()
                    clients[index].run_with("echo", [], ECHO_KWARGS)
                    pair[index] = (time.perf_counter() - start) * 1000
                for index, ms in enumerate(pair):
                    samples[index].append(ms)
                ratios.append(pair[1] / pair[0])
            print(f"round {round_ + 1} done", file=sys.stderr)
    return [TreeResult(_label(tree), s) for tree, s in zip(trees, samples, strict=True)], ratios


def report(results: list[TreeResult], ratios: list[float], max_pause_ms: float, other_load: float) -> str:
    facts = machine_facts()
    rows = [[r.label, f"{percentile(r.samples, 50):.2f} / {percentile(r.samples, 99):.2f}", str(len(r.samples))]
            for r in results]  # fmt: skip
    mode = f"a random 0-{max_pause_ms:g} ms pause before each request" if max_pause_ms > 0 else "back to back"
    first, second = results[0], results[1]
    return (
        f"# bench.ab_round_trip: {mode}\n"
        f"machine: {facts['nproc']} cores, {facts['cpu']}; other load {other_load:.2f} cores\n\n"
        + table(["tree", "round trip p50 / p99 ms", "requests"], rows)
        + f"\n\nmedian of the per-pair ratios, {second.label} / {first.label}: {statistics.median(ratios):.3f}"
        f" (p50 ratio {percentile(second.samples, 50) / percentile(first.samples, 50):.3f})\n"
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tree", type=Path, required=True, help="the other checkout (measured second)")
    parser.add_argument("--requests", type=int, default=1000, help="pairs of requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-pause-ms", type=float, default=20.0, help="0: back to back")
    args = parser.parse_args(argv)
    if not (args.tree / "api" / "app.py").exists():
        parser.error("--tree must name a Relay checkout")
    other = OtherLoad()
    trees = [Path(__file__).resolve().parent.parent, args.tree]
    results, ratios = measure(trees, args.requests, args.rounds, args.max_pause_ms)
    output = report(results, ratios, args.max_pause_ms, other.cores())
    print(output)
    return output


if __name__ == "__main__":
    main()
