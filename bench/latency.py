"""Submit -> first event and submit -> final event at the client, with one idle worker.

Usage: .venv/bin/python -m bench.latency [--requests 200] [--poll-delays 0.5,0.1] [--breakdown] [--app FACTORY]
                                         [--wait-replicas N]

For each poll delay it starts a private redis-server, one worker and one API, then submits no-op
(``echo``) tasks one at a time, each streamed back on its own POST response, and reports p50/p99.
Between requests it sleeps a random part of the poll delay, so submits land anywhere in the idle
worker's poll cycle. Before measuring, it counts the idle worker's polls (``ZRANGEBYSCORE`` calls in
Redis's command stats over 2 s), since the target holds only for a worker that polls <= ~10 times/s.
``--wait-replicas N`` gives Redis N replicas and sets ``RELAY_REDIS_WAIT_REPLICAS=N``: every submit then
waits for the replicas before it is acknowledged (compare with a run without it).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass

import httpx
import redis

from bench.common import OtherLoad, bench_scope, start_api_factory, table
from bench.harness.processes import relay_env, start_worker

TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0
MAX_IDLE_POLLS_PER_SECOND = 10.5  # "<= ~10 polls/s", with room for the timer's jitter
DEFAULT_APP = "api.app:create_app"


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


STAGES = {
    "POST -> response headers (API: validate, enqueue, wake-up)": ("post", "headers"),
    "POST -> started published (worker clock)": ("post", "started_ts"),
    "started published -> received": ("started_ts", "started_rx"),
    "started -> result published (the task itself)": ("started_ts", "result_ts"),
    "result -> end published (result stored, after_job_end)": ("result_ts", "end_ts"),
    "end published -> received": ("end_ts", "end_rx"),
}


def breakdown(base: str, requests: int, poll_delay: float) -> dict[str, float]:
    """Median milliseconds per stage of one streamed submit, from the events' own ``ts`` (worker clock,
    the same machine clock as ours). A separate pass: ``measure`` stays exactly what it was."""
    samples: list[dict[str, float]] = []
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(requests + 5):
            marks = {"post": time.time()}
            headers = {"Accept": "application/x-ndjson"}
            with http.stream("POST", "/tasks", json={"task": "echo"}, headers=headers) as response:
                marks["headers"] = time.time()
                for line in response.iter_lines():
                    if line and '"type":"heartbeat"' not in line:
                        event = json.loads(line)
                        marks[event["type"] + "_ts"], marks[event["type"] + "_rx"] = event["ts"], time.time()
                        if event["type"] == "end":
                            break
            if i >= 5:
                samples.append(marks)
            time.sleep(random.uniform(0, poll_delay))
    return {name: statistics.median((m[b] - m[a]) * 1000 for m in samples) for name, (a, b) in STAGES.items()}


@dataclass(frozen=True)
class LatencyResult:
    """One poll delay's measurement."""

    poll_delay: float
    idle_polls_per_second: float
    first_ms: list[float]
    final_ms: list[float]
    other_cores: float
    stages: dict[str, float] | None = None

    def verdict(self) -> str:
        """The target (p50 <= 5 ms, p99 <= 20 ms, worker polling <= ~10 times/s), for each latency."""
        if self.idle_polls_per_second > MAX_IDLE_POLLS_PER_SECOND:
            return "n/a (polls too often)"
        pairs = (("first", self.first_ms), ("final", self.final_ms))
        return ", ".join(f"{name} {_meets(values)}" for name, values in pairs)


def _meets(values: list[float]) -> str:
    return "met" if statistics.median(values) <= TARGET_P50_MS and percentile(values, 99) <= TARGET_P99_MS else "MISSED"


def idle_polls_per_second(url: str, seconds: float = 2.0) -> float:
    """How often the idle worker asks Redis for jobs (arq's poll is one ZRANGEBYSCORE)."""
    client = redis.Redis.from_url(url)
    try:
        client.config_resetstat()
        time.sleep(seconds)
        stats = client.info("commandstats")
        return int(stats.get("cmdstat_zrangebyscore", {}).get("calls", 0)) / seconds
    finally:
        client.close()


def run(
    poll_delay: float, requests: int, with_breakdown: bool = False, app: str = DEFAULT_APP, wait_replicas: int = 0
) -> LatencyResult:
    """Fresh Redis, worker and API for this poll delay; every process is stopped by PID at the end."""
    with bench_scope() as bench:
        server = bench.redis()
        bench.replicas(server, wait_replicas)
        env = relay_env(
            server.url, RELAY_POLL_DELAY_SECONDS=str(poll_delay), RELAY_REDIS_WAIT_REPLICAS=str(wait_replicas)
        )
        bench.own(start_worker(bench.log_dir, env))
        _, base = start_api_factory(bench, env, app)
        polls = idle_polls_per_second(server.url)
        others = OtherLoad()
        first, final = measure(base, requests, poll_delay)
        other_cores = others.cores()
        stages = breakdown(base, requests, poll_delay) if with_breakdown else None
    result = LatencyResult(poll_delay, polls, first, final, other_cores, stages)
    print(f"poll delay {poll_delay:g} s done: {result.verdict()}", flush=True)
    return result


def report(results: list[LatencyResult]) -> str:
    """One row per poll delay, with the target verdict."""
    rows = [
        [
            f"{r.poll_delay:g} s",
            f"{r.idle_polls_per_second:.1f}",
            len(r.first_ms),
            f"{statistics.median(r.first_ms):.1f}",
            f"{percentile(r.first_ms, 99):.1f}",
            f"{statistics.median(r.final_ms):.1f}",
            f"{percentile(r.final_ms, 99):.1f}",
            f"{r.other_cores:.2f}",
            r.verdict(),
        ]
        for r in results
    ]
    headers = [
        "poll delay",
        "idle polls/s",
        "n",
        "first event p50 ms",
        "first p99 ms",
        "final event p50 ms",
        "final p99 ms",
        "other load (cores)",
        f"target (p50 <= {TARGET_P50_MS:g}, p99 <= {TARGET_P99_MS:g}, <= ~10 polls/s)",
    ]
    output = table(headers, rows)
    for r in results:
        if r.stages:
            stage_rows = [[name, f"{ms:.2f}"] for name, ms in r.stages.items()]
            output += f"\n\nwhere the time goes at poll delay {r.poll_delay:g} s (medians, separate pass):\n"
            output += table(["stage", "ms"], stage_rows)
    return output


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--poll-delays", default="0.5,0.1")
    parser.add_argument("--breakdown", action="store_true", help="add a pass that times each stage")
    parser.add_argument("--app", default=DEFAULT_APP, help="API factory (module:function), default Relay's")
    parser.add_argument("--wait-replicas", type=int, default=0, help="N replicas, and WAIT for them on submit")
    args = parser.parse_args(argv)
    delays = [float(d) for d in args.poll_delays.split(",")]
    results = [run(d, args.requests, args.breakdown, args.app, args.wait_replicas) for d in delays]
    output = report(results)
    print(output, flush=True)
    return output


if __name__ == "__main__":
    main()
