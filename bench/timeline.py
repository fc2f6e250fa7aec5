"""Where a round trip's time goes, step by step, across the client, the API, Redis and the worker.

One client runs ``echo`` with ``relay.client.Client.run()`` (one streamed POST), at random arrival (a 0-20 ms
pause before each request) and back to back. Every process marks the steps it takes (``bench.timeline_marks``:
wrappers installed at start-up, Relay's code unchanged) on the host's monotonic clock, so one request's marks
from four processes fall on one time line. The report gives, per mode, each step's median time since the client
called ``run()`` and the median time from the step before, and how long Redis itself ran each script (its
SLOWLOG, every command logged while the mode runs).

    .venv/bin/python -m bench.timeline --requests 500
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import random
import statistics
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import OtherLoad, bench_scope, machine_facts, table
from bench.harness.processes import relay_env, start_api, start_worker
from bench.timeline_marks import install, mark
from relay.client import Client
from shared.scripts import SCRIPT_NAMES, source

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


def script_times(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Redis's own time per call of each script (its SLOWLOG ``duration``: the script and the commands it runs),
    median us, by script name."""
    by_sha = {hashlib.sha1(source(name).encode()).hexdigest(): name for name in SCRIPT_NAMES}
    durations: dict[str, list[float]] = {}
    for entry in entries:
        argv = entry["command"].split(b" ")
        if argv[0].upper() == b"EVALSHA" and len(argv) > 1 and argv[1].decode() in by_sha:
            durations.setdefault(by_sha[argv[1].decode()], []).append(entry["duration"])
    return {name: statistics.median(us) for name, us in durations.items()}


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
        slowlog = redis.Redis.from_url(server.url)
        bench.stack.callback(slowlog.close)
        slowlog.config_set("slowlog-log-slower-than", 0)  # every command, with its duration
        slowlog.config_set("slowlog-max-len", 1_000_000)
        windows, scripts = {}, {}
        for title, pause in modes.items():
            slowlog.slowlog_reset()
            windows[title] = run_requests(client, args.requests, pause)
            scripts[title] = script_times(slowlog.slowlog_get(1_000_000))
        marks = read_marks(marks_dir)
    facts = machine_facts()
    print(f"# bench.timeline: {args.requests} round trips per mode\n")
    print(f"machine: {facts['nproc']} cores, {facts['cpu']}; other load {other.cores():.2f} cores\n")
    for title, mode_windows in windows.items():
        print(report_mode(title, steps(marks, mode_windows), args.requests) + "\n")
        times = ", ".join(f"{name} {us:.0f} us" for name, us in sorted(scripts[title].items(), key=lambda kv: -kv[1]))
        print(f"Redis's own time per script call (SLOWLOG, median): {times}\n")


if __name__ == "__main__":
    main()
