"""Soak: a steady load of streamed submits for N minutes, with long-lived streams open, watching memory.

Usage: .venv/bin/python -m bench.soak [--minutes 10] [--rate 50] [--open-streams 50] [--sample-seconds 10]
                                      [--port 8900]

It starts a private redis-server, one worker and one API (ports from ``--port`` on), opens
``--open-streams`` follows of a task that waits (they stay open all along), then submits ``echo`` tasks at
``--rate`` a second, each streamed back on its own POST (NDJSON), alternating two clients: a curl-like one
(a new socket, read to the final chunk, closed at once: what issue #26's leak needed) and httpx (one
keep-alive client). Every ``--sample-seconds`` it records the API's and the worker's RSS and Redis's
``used_memory``; at the end it prints them over time and the p99 round trip (submit to ``end``) of the
first and of the last minute (of the first and last half when the run is shorter than two minutes).

Self-contained (bench must not import tests/): processes are started and stopped by PID here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
FINAL_CHUNK = b"0\r\n\r\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Processes:
    """The processes this soak started, stopped by their own PID (SIGTERM, then SIGKILL)."""

    log_dir: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@contextmanager
def processes() -> Iterator[Processes]:
    with tempfile.TemporaryDirectory(prefix="relay-soak-") as tmp:
        procs = Processes(Path(tmp))
        try:
            yield procs
        finally:
            procs.stop_all()


def wait_for(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, httpx.HTTPError, redis.RedisError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def start_stack(procs: Processes, port: int) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str, str]:
    """redis-server on ``port``, a worker, and the API on ``port + 1``; returns API, worker, API URL, Redis URL."""
    server = shutil.which("redis-server") or "redis-server"
    procs.start("redis", [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {})
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis.Redis.from_url(url).ping(), 10, "redis-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {"RELAY_REDIS_URL": url, "RELAY_WORKER_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
    env["RELAY_TASK_MODULES"] = "worker.tasks.demo"  # echo
    worker = procs.start("worker", [str(BIN / "arq"), "worker.settings"], env)
    wait_for(lambda: "relay worker ready" in procs.log("worker"), 30, "the worker")
    api_argv = [str(BIN / "sanic"), "api.app:create_app", "--factory", "--single-process", "--no-motd"]
    api = procs.start("api", [*api_argv, "--host", "127.0.0.1", "--port", str(port + 1)], env)
    base = f"http://127.0.0.1:{port + 1}"
    wait_for(lambda: httpx.get(f"{base}/health/ready", timeout=1).status_code == 200, 30, "the API")
    return api, worker, base, url


async def curl_like(port: int) -> float:
    """One streamed submit on a new socket, closed right after the final chunk; seconds to the end."""
    body = json.dumps({"task": "echo", "kwargs": {}}).encode()
    head = f"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/x-ndjson\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        received = b""
        while not received.endswith(FINAL_CHUNK):
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the API closed the stream early")
            received += data
    finally:
        writer.close()
    return time.perf_counter() - start


async def with_httpx(client: httpx.AsyncClient) -> float:
    start = time.perf_counter()
    headers = {"Accept": "application/x-ndjson"}
    async with client.stream("POST", "/tasks", json={"task": "echo", "kwargs": {}}, headers=headers) as response:
        async for _ in response.aiter_bytes():
            pass
    return time.perf_counter() - start


@dataclass
class Run:
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)  # t, API, worker, Redis MiB
    round_trips: list[tuple[float, float]] = field(default_factory=list)  # t at start, seconds
    errors: int = 0


async def soak(args: argparse.Namespace, api_pid: int, worker_pid: int, base: str, redis_url: str) -> Run:
    run = Run()
    port = int(base.rsplit(":", 1)[1])
    client = redis.Redis.from_url(redis_url)
    async with httpx.AsyncClient(base_url=base, timeout=60) as http, httpx.AsyncClient(base_url=base) as held:
        waiting = (await http.post("/tasks", json={"task": "echo", "delay_seconds": 86400})).json()["id"]
        opened = [held.stream("GET", f"/tasks/{waiting}/events", timeout=None) for _ in range(args.open_streams)]
        for stream in opened:
            await stream.__aenter__()
        t0 = time.monotonic()
        duration = args.minutes * 60
        pending: set[asyncio.Task[None]] = set()

        async def one(index: int, at: float) -> None:
            try:
                seconds = await (curl_like(port) if index % 2 == 0 else with_httpx(http))
                run.round_trips.append((at, seconds))
            except (OSError, httpx.HTTPError):
                run.errors += 1

        next_sample, index = 0.0, 0
        while (now := time.monotonic() - t0) < duration:
            if now >= next_sample:
                used = int(client.info("memory")["used_memory"]) / 2**20
                run.samples.append((now, rss_mib(api_pid), rss_mib(worker_pid), used))
                next_sample += args.sample_seconds
            task = asyncio.create_task(one(index, now))
            pending.add(task)
            task.add_done_callback(pending.discard)
            index += 1
            await asyncio.sleep(max(0.0, index / args.rate - (time.monotonic() - t0)))
        await asyncio.gather(*pending)
        await asyncio.sleep(1)
        used = int(client.info("memory")["used_memory"]) / 2**20
        run.samples.append((time.monotonic() - t0, rss_mib(api_pid), rss_mib(worker_pid), used))
        for stream in opened:
            await stream.__aexit__(None, None, None)
    client.close()
    return run


def report(args: argparse.Namespace, run: Run) -> str:
    lines = [f"soak: {args.rate}/s streamed submits for {args.minutes} min, {args.open_streams} streams held open"]
    lines.append("  t (s)   API RSS (MiB)   worker RSS (MiB)   Redis used_memory (MiB)")
    lines += [f"  {t:6.0f}  {api:14.1f}  {worker:17.1f}  {used:24.1f}" for t, api, worker, used in run.samples]
    window = min(60.0, args.minutes * 60 / 2)
    end = args.minutes * 60
    first = [s * 1000 for t, s in run.round_trips if t < window]
    last = [s * 1000 for t, s in run.round_trips if t >= end - window]
    lines.append(f"round trips: {len(run.round_trips)}, errors: {run.errors}")
    lines.append(f"p99 round trip, first {window:.0f} s: {p99(first):.1f} ms; last {window:.0f} s: {p99(last):.1f} ms")
    growth = run.samples[-1][1] - run.samples[0][1]
    lines.append(f"API RSS growth over the run: {growth:+.1f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50, help="streamed submits a second")
    parser.add_argument("--open-streams", type=int, default=50)
    parser.add_argument("--sample-seconds", type=float, default=10)
    parser.add_argument("--port", type=int, default=8900, help="Redis on this port, the API on the next")
    args = parser.parse_args(argv)
    with processes() as procs:
        api, worker, base, redis_url = start_stack(procs, args.port)
        run = asyncio.run(soak(args, api.pid, worker.pid, base, redis_url))
    text = report(args, run)
    print(text)
    return text


if __name__ == "__main__":
    main()
