"""Where a round trip's time goes, step by step, across the client, the API, Redis and the worker.

One client runs ``echo`` with ``relay.client.Client.run()`` (one streamed POST), at random arrival (a 0-20 ms
pause before each request) and back to back. Every process marks the steps it takes (``bench.timeline_marks``:
wrappers installed at start-up, Relay's code unchanged) on the host's monotonic clock, so one request's marks
from four processes fall on one time line. The report gives, per mode, each step's median time since the client
called ``run()`` and its median share of the way from the step before.

    .venv/bin/python -m bench.timeline --requests 500
"""

from __future__ import annotations

import argparse
import bisect
import random
import statistics
import time
from pathlib import Path

from bench.common import OtherLoad, bench_scope, machine_facts, table
from bench.harness.processes import relay_env, start_api, start_worker
from bench.timeline_marks import install, mark
from relay.client import Client

REPO = Path(__file__).resolve().parent.parent
SITE = Path(__file__).resolve().parent / "timeline_site"
ECHO_KWARGS = {"message": "hello"}
START, END = "client: run() called", "client: run() returned"


def run_requests(client: Client, requests: int, max_pause_s: float) -> list[tuple[int, int]]:
    """``requests`` round trips; each one's (start, end) on the monotonic clock in ns."""
    windows = []
    for _ in range(requests):
        if max_pause_s > 0:
            time.sleep(random.uniform(0, max_pause_s))
        start = time.monotonic_ns()
        mark(START)
        client.run_with("echo", [], ECHO_KWARGS)
        mark(END)
        windows.append((start, time.monotonic_ns()))
    return windows


def read_marks(directory: Path) -> list[tuple[int, str]]:
    marks = []
    for path in directory.glob("*.marks"):
        for line in path.read_text().splitlines():
            ns, _, name = line.partition(" ")
            marks.append((int(ns), name))
    return sorted(marks)


def steps(marks: list[tuple[int, str]], windows: list[tuple[int, int]]) -> list[tuple[str, float, int]]:
    """Each step's median ms since ``run()`` was called, in time order, with how many requests had it. A step
    marked more than once in a request (the stream's writes after its first, say) counts at its first."""
    times = [ns for ns, _ in marks]
    offsets: dict[str, list[float]] = {}
    for start, end in windows:
        seen: set[str] = set()
        for ns, name in marks[bisect.bisect_left(times, start) : bisect.bisect_right(times, end)]:
            if name not in seen:
                seen.add(name)
                offsets.setdefault(name, []).append((ns - start) / 1e6)
    rows = [(label, statistics.median(ms), len(ms)) for label, ms in offsets.items()]
    return sorted(rows, key=lambda row: row[1])


def report_mode(title: str, rows: list[tuple[str, float, int]], requests: int) -> str:
    lines, previous = [], 0.0
    for label, ms, count in rows:
        if label == START:
            continue
        seen = "" if count == requests else f" (in {count} of {requests})"
        lines.append([label + seen, f"{ms:.3f}", f"{ms - previous:+.3f}"])
        previous = ms
    return f"## {title}\n\n" + table(["step", "median ms since run() was called", "since the step before"], lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="round trips per mode")
    parser.add_argument("--max-pause-ms", type=float, default=20.0)
    args = parser.parse_args()
    other = OtherLoad()
    with bench_scope() as bench:
        marks_dir = bench.log_dir / "marks"
        marks_dir.mkdir()
        server = bench.redis()
        env = relay_env(server.url) | {"PYTHONPATH": f"{SITE}:{REPO}", "RELAY_BENCH_TIMELINE_DIR": str(marks_dir)}
        api, base = start_api(bench.log_dir, env)
        bench.own(api)
        bench.own(start_worker(bench.log_dir, env))
        install(str(marks_dir))
        client = Client(base, timeout=30)
        bench.stack.callback(client.close)
        run_requests(client, 50, 0)  # warm-up
        modes = {
            f"at random arrival (a 0-{args.max_pause_ms:g} ms pause before each request)": args.max_pause_ms / 1000,
            "back to back": 0.0,
        }
        windows = {title: run_requests(client, args.requests, pause) for title, pause in modes.items()}
        marks = read_marks(marks_dir)
    facts = machine_facts()
    print(f"# bench.timeline: {args.requests} round trips per mode\n")
    print(f"machine: {facts['nproc']} cores, {facts['cpu']}; other load {other.cores():.2f} cores\n")
    for title, mode_windows in windows.items():
        print(report_mode(title, steps(marks, mode_windows), args.requests) + "\n")


if __name__ == "__main__":
    main()
