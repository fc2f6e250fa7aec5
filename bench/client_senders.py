"""The blocking client's round trip over urllib3 (its default) against over httpx (``transport=`` forced), A/B.

Usage: .venv/bin/python -m bench.client_senders [--rounds 3] [--requests 200] [--max-pause-ms 20] [--wait-quiet 30]

One API, one worker and one Redis serve both; each round measures the senders at random arrival (a pause drawn
uniformly from 0 to ``--max-pause-ms`` before each request, so each meets an idle system: what a user feels) and
back to back, ``--requests`` round trips each, taken in turn request by request (the order flips every request),
so a burst of other work on the shared machine hits each alike. A round trip is what bench.peers measures for
Relay: ``run()`` (``bench.peers.relay_adapter.run_to_end``: one request, ``POST /tasks`` with its events
streamed back on the response). For scale, a third client in each round is that same request over raw httpx,
its stream read to ``end``, as bench.peers made it before it used the client. Other processes'
CPU is printed beside every block (before each, up to ``--wait-quiet`` s are spent waiting for it to drop under
0.25 cores): on a shared machine compare within one run only (issue #25).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import httpx

from bench.common import OtherLoad, bench_scope, percentile, table, wait_until_quiet
from bench.harness.processes import relay_env, start_api, start_worker
from bench.peers.relay_adapter import ECHO_KWARGS, run_to_end
from relay.client import Client

QUIET_CORES = 0.25  # as bench.peers: other processes above this make a block noisy
WARM_UP = 20  # round trips per client before any is timed: connections open, code paths warm

SENDERS: dict[str, Callable[[str], Client]] = {
    "urllib3 (default)": lambda url: Client(url),
    "httpx (transport=)": lambda url: Client(url, transport=httpx.HTTPTransport()),
}
POST_STREAM = "POST+stream, raw httpx"
NDJSON = {"Accept": "application/x-ndjson"}


class PostStream:
    """The round trip without the client: one ``POST /tasks`` whose answer is the task's NDJSON stream."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def __call__(self) -> None:
        with self.http.stream("POST", "/tasks", json={"task": "echo", "kwargs": ECHO_KWARGS}, headers=NDJSON) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if line and json.loads(line)["type"] == "end":
                    return
        raise RuntimeError("the stream closed before the end event")


def timed(round_trips: dict[str, Callable[[], object]], n: int, max_pause: float) -> dict[str, list[float]]:
    """``n`` round trips in ms of each, in turn, each after a pause drawn from 0 to ``max_pause`` s (0: back to
    back); the order of the turn flips every time."""
    ms: dict[str, list[float]] = {name: [] for name in round_trips}
    names = list(round_trips)
    for i in range(n):
        for name in names if i % 2 else reversed(names):
            if max_pause:
                time.sleep(random.uniform(0, max_pause))
            began = time.perf_counter()
            round_trips[name]()
            ms[name].append((time.perf_counter() - began) * 1000)
    return ms


def client_round_trip(client: Client) -> Callable[[], object]:
    return lambda: run_to_end(client, "echo", [], ECHO_KWARGS)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m bench.client_senders", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=200, help="round trips per sender, arrival and round")
    p.add_argument("--max-pause-ms", type=float, default=20.0)
    p.add_argument("--wait-quiet", type=float, default=30.0, help="max s to wait for quiet before each block")
    args = p.parse_args(argv)
    rows: list[list[object]] = []
    medians: dict[tuple[str, str], list[float]] = {}
    with bench_scope() as bench:
        env = relay_env(bench.redis().url)
        bench.own(start_worker(bench.log_dir, env))
        api, url = start_api(bench.log_dir, env)
        bench.own(api)
        clients = {name: client_round_trip(bench.stack.enter_context(make(url))) for name, make in SENDERS.items()}
        post_stream = PostStream(url)
        bench.stack.callback(post_stream.http.close)
        clients[POST_STREAM] = post_stream
        timed(clients, WARM_UP, 0)
        for round_ in range(1, args.rounds + 1):
            for arrival, pause in (("random", args.max_pause_ms / 1000), ("back to back", 0.0)):
                if args.wait_quiet > 0:
                    wait_until_quiet(QUIET_CORES, args.wait_quiet)
                load = OtherLoad()
                measured = timed(clients, args.requests, pause)
                cores = load.cores()
                for name, ms in measured.items():
                    p50 = statistics.median(ms)
                    medians.setdefault((name, arrival), []).append(p50)
                    rows.append([round_, name, arrival, f"{p50:.2f}", f"{percentile(ms, 90):.2f}", f"{cores:.2f}"])
                    print(f"round {round_}: {name}, {arrival}: p50 {p50:.2f} ms", file=sys.stderr, flush=True)
    summary = [
        [name, arrival, " / ".join(f"{m:.2f}" for m in ms), f"{statistics.median(ms):.2f}"]
        for (name, arrival), ms in sorted(medians.items(), key=lambda item: (item[0][1], item[0][0]))
    ]
    command = ".venv/bin/python -m bench.client_senders " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = "\n\n".join(
        [
            f"`{command.strip()}`",
            table(["round", "sender", "arrival", "p50 ms", "p90 ms", "other load (cores)"], rows),
            table(["sender", "arrival", "p50 per round (ms)", "median of rounds (ms)"], summary),
        ]
    )
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
