"""Submit -> first event and submit -> final event at the client, with one idle worker.

Usage: .venv/bin/python -m bench.latency [--requests 200] [--poll-delays 0.5,0.1,0.05]

For each poll delay it starts a private redis-server, one worker and one API, then submits no-op
(``echo``) tasks one at a time, each streamed back on its own POST response, and reports p50/p99.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.processes import relay_env, start_api, start_redis, start_worker


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def measure(base: str, requests: int, poll_delay: float) -> tuple[list[float], list[float]]:
    """Milliseconds to the first event and to the ``end`` event, per request."""
    first_ms, final_ms = [], []
    headers = {"Accept": "application/x-ndjson"}
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(requests + 5):
            start = time.perf_counter()
            first = None
            with http.stream("POST", "/tasks", json={"task": "echo"}, headers=headers) as response:
                for line in response.iter_lines():
                    if not line:
                        continue
                    if first is None:
                        first = time.perf_counter()
                    if '"type":"end"' in line:
                        break
            end = time.perf_counter()
            if i >= 5 and first is not None:  # the first few warm up connections and caches
                first_ms.append((first - start) * 1000)
                final_ms.append((end - start) * 1000)
            time.sleep(random.uniform(0, poll_delay))  # land at random points of the worker's poll cycle
    return first_ms, final_ms


def run(poll_delay: float, requests: int, log_dir: Path) -> None:
    redis, url = start_redis(log_dir)
    env = relay_env(url, RELAY_POLL_DELAY_SECONDS=str(poll_delay))
    worker = start_worker(log_dir, env)
    api, base = start_api(log_dir, env)
    try:
        first, final = measure(base, requests, poll_delay)
    finally:
        api.stop()
        worker.stop()
        redis.stop()
    print(
        f"poll_delay={poll_delay:<5} idle polls/s={1 / poll_delay:6.1f}  "
        f"first event p50={statistics.median(first):7.1f} ms p99={percentile(first, 99):7.1f} ms  "
        f"final event p50={statistics.median(final):7.1f} ms p99={percentile(final, 99):7.1f} ms  (n={len(first)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--poll-delays", default="0.5,0.1,0.05")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for delay in (float(d) for d in args.poll_delays.split(",")):
            run(delay, args.requests, Path(tmp))


if __name__ == "__main__":
    main()
