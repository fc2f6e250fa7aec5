"""HTTP submit throughput of one API process, against a bare Sanic app as the ceiling.

Usage: .venv/bin/python -m bench.http_submit [--seconds 10] [--connections 50] [--profile] [--wait-replicas N]

``POST /tasks`` of ``echo`` from ``--connections`` keep-alive connections for ``--seconds``, with
wrk (``apt-get install -y wrk``) when installed, else ``bench.loadgen``. No worker runs, so the
queue only grows (``RELAY_MAX_QUEUE_DEPTH`` is 10,000,000); the queue's growth is checked against the
2xx count. The load generator runs on the same 2 cores as the server and Redis: these are numbers for
this box, not for a server with a client elsewhere. ``--profile`` adds a py-spy run of the API.
``--wait-replicas N`` gives the Redis N replicas and adds a Relay API with ``RELAY_REDIS_WAIT_REPLICAS=N``
(a 202 only once N replicas have the job) next to the plain one, on the same Redis: WAIT's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.common import Bench, OtherLoad, bench_scope, cpu_seconds, peak_rss_mib, start_api_factory, table
from bench.harness.processes import BIN, ManagedProcess, free_port, relay_env, wait_until
from bench.loadgen import run_load
from bench.profiling import sampled, summarize
from shared.scripts import source

BODY = b'{"task":"echo","kwargs":{"message":"hello"}}'
LUA = Path(__file__).with_name("wrk_submit.lua")
MAX_REQUESTS = 2_000_000  # bound for the Python client (wrk is bounded by --seconds)


@dataclass(frozen=True)
class Target:
    """A server under load: its label, PID and port."""

    label: str
    pid: int
    port: int


@dataclass(frozen=True)
class SubmitResult:
    """One timed run against one target."""

    target: str
    client: str
    summary: dict[str, float]
    server_cpu_seconds: float
    peak_rss_mib: float
    enqueued: int | None
    other_cores: float

    @property
    def ok(self) -> int:
        return int(self.summary["requests"] - self.summary["status_errors"])

    @property
    def per_second(self) -> float:
        return self.ok / (self.summary["duration_us"] / 1e6)


def start_hello(bench: Bench) -> Target:
    """``sanic bench.hello_app:create_app --factory --single-process`` on a free port."""
    port = free_port()
    argv = [str(BIN / "sanic"), "bench.hello_app:create_app", "--factory", "--single-process", "--no-motd"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = bench.own(ManagedProcess("hello", argv, relay_env("redis://unused"), bench.log_dir))

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 20, "the hello app")
    return Target("bare Sanic", proc.pid, port)


def load(port: int, connections: int, seconds: float) -> tuple[str, dict[str, float]]:
    """Run the load; returns which client ran it and its summary."""
    wrk = shutil.which("wrk")
    if wrk is None:
        coro = run_load("127.0.0.1", port, "/tasks", BODY, connections, seconds, MAX_REQUESTS)
        return "bench.loadgen", asyncio.run(coro)
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(LUA)]
    out = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}/tasks"], capture_output=True, text=True, timeout=seconds + 30
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    return "wrk -t1", json.loads(line.removeprefix("WRK_JSON "))


def waiting_jobs(client: redis.Redis, queue_name: str) -> int:
    """Jobs waiting in the queue's lanes (``shared/keys.py``), due or deferred."""
    due, deferred, _running, _tasks = client.register_script(source("counts"))(keys=[queue_name])
    return int(due) + int(deferred)


def measure(target: Target, connections: int, seconds: float, queue: redis.Redis | None, name: str) -> SubmitResult:
    """A 1 s warm-up, then the timed run; counts the queue's growth during the timed run."""
    load(target.port, connections, 1)
    before = waiting_jobs(queue, name) if queue is not None else 0
    cpu, others = cpu_seconds(target.pid), OtherLoad()
    client, summary = load(target.port, connections, seconds)
    cpu, other_cores = cpu_seconds(target.pid) - cpu, others.cores()
    enqueued = waiting_jobs(queue, name) - before if queue is not None else None
    return SubmitResult(target.label, client, summary, cpu, peak_rss_mib(target.pid), enqueued, other_cores)


def run(
    seconds: float, connections: int, profile: bool, apps: list[str], wait_replicas: int = 0
) -> tuple[list[SubmitResult], str]:
    """Relay's API, then the bare app, then (with ``wait_replicas``) Relay's API acknowledging only
    replicated submits, then any patched ``apps``; optionally a profiled run of the API."""
    with bench_scope() as bench:
        server = bench.redis()
        bench.replicas(server, wait_replicas)
        name = f"bench:submit:{uuid.uuid4().hex[:8]}"
        env = relay_env(server.url, RELAY_QUEUE_NAME=name, RELAY_MAX_QUEUE_DEPTH="10000000")
        pid, base = start_api_factory(bench, env)
        label = f"Relay API ({wait_replicas} replicas, no WAIT)" if wait_replicas else "Relay API"
        relay_target = Target(label, pid, int(base.rsplit(":", 1)[1]))
        client = redis.Redis.from_url(server.url)
        try:
            results = [measure(relay_target, connections, seconds, client, name)]
            results.append(measure(start_hello(bench), connections, seconds, None, name))
            if wait_replicas:
                pid, base = start_api_factory(bench, env | {"RELAY_REDIS_WAIT_REPLICAS": str(wait_replicas)})
                target = Target(f"Relay API, WAIT {wait_replicas}", pid, int(base.rsplit(":", 1)[1]))
                results.append(measure(target, connections, seconds, client, name))
            for app in apps:
                pid, base = start_api_factory(bench, env, app)
                target = Target(app.rsplit(":", 1)[1], pid, int(base.rsplit(":", 1)[1]))
                results.append(measure(target, connections, seconds, client, name))
            notes = profile_api(bench, relay_target, connections) if profile else ""
        finally:
            client.close()
    return results, notes


def profile_api(bench: Bench, target: Target, connections: int, seconds: float = 8) -> str:
    """py-spy the API under the same load (a separate run: sampling slows the process)."""
    raw = bench.log_dir / "api-submit.raw"
    with sampled(target.pid, seconds, raw):
        time.sleep(0.5)
        load(target.port, connections, seconds - 1)
    return "py-spy of the Relay API under submit load:\n" + summarize(raw, top=40)


def report(results: list[SubmitResult]) -> str:
    """Accepted submits per second, latency, and the server's CPU use."""
    rows = [
        [
            r.target,
            r.client,
            f"{r.summary['requests']:,.0f}",
            f"{r.ok:,}",
            "-" if r.enqueued is None else f"{r.enqueued:,}",
            f"{r.per_second:,.0f}",
            f"{r.summary['p50_us'] / 1000:.1f}",
            f"{r.summary['p99_us'] / 1000:.1f}",
            f"{100 * r.server_cpu_seconds / (r.summary['duration_us'] / 1e6):.0f} %",
            f"{r.peak_rss_mib:.0f}",
            f"{r.other_cores:.2f}",
        ]
        for r in results
    ]
    headers = [
        "server",
        "client",
        "requests",
        "2xx",
        "enqueued",
        "2xx/s",
        "p50 ms",
        "p99 ms",
        "server CPU",
        "peak RSS MiB",
        "other load (cores)",
    ]
    ratio = results[0].per_second / results[1].per_second
    return f"{table(headers, rows)}\nRelay API / bare Sanic: {ratio:.2f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each timed run")
    parser.add_argument("--connections", type=int, default=50, help="concurrent keep-alive connections")
    parser.add_argument("--profile", action="store_true", help="also py-spy the API under load")
    parser.add_argument("--app", action="append", default=[], help="also measure this API factory (repeatable)")
    parser.add_argument("--wait-replicas", type=int, default=0, help="also measure WAIT for this many replicas")
    args = parser.parse_args(argv)
    results, notes = run(args.seconds, args.connections, args.profile, args.app, args.wait_replicas)
    output = report(results) + (f"\n\n{notes}" if notes else "")
    print(output, flush=True)
    return output


if __name__ == "__main__":
    main()
