"""Soak: a steady load of streamed submits for N minutes, with long-lived streams open, watching memory.

Usage: .venv/bin/python -m bench.soak [--minutes 10] [--rate R | --capacity-seconds 20] [--open-streams 50]
                                      [--warmup-minutes 2] [--result-ttl-seconds 60] [--sample-seconds 10]
                                      [--port 8900]

It starts a private redis-server, one worker and one API (ports from ``--port`` on), opens
``--open-streams`` follows of a task that waits (they stay open all along), then submits ``echo`` tasks at
``--rate`` a second, each streamed back on its own POST (NDJSON), alternating two clients: a curl-like one
(a new socket, read to the final chunk, closed at once: what issue #26's leak needed) and httpx (one
keep-alive client). Every ``--sample-seconds`` it records the API's and the worker's RSS and Redis's
``used_memory``; at the end it prints them over time and the p99 round trip (submit to ``end``) of the
first and of the last minute (of the first and last half when the run is shorter than two minutes).

Without ``--rate`` it first measures the stack's capacity with the same two clients (``--capacity-concurrency``
submits in flight for ``--capacity-seconds``) and soaks at half of it (issue #25's condition). Results expire after
``--result-ttl-seconds`` (60, not the default hour: with an hour's results kept, Redis grows for an hour by design,
and flat memory could not be told from a leak in ten minutes); the warm-up (``--warmup-minutes``, longer than the
TTL) lets that steady state set in. The verdicts judge from the end of the warm-up: API and worker RSS growth
<= 5 %, Redis ``used_memory`` growth <= 5 % (flat), p99 round trip of the last minute at most 20 % above the
first minute after the warm-up (a p99 that fell is no sign of wear; the run's first minute is shown too), with
p50, p99 and the cores other processes used for every minute, so a drift can be told from a busy machine.

Self-contained (bench must not import tests/): processes are started and stopped by PID here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
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

from bench.common import OtherLoad, stopping_on_sigterm

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
FINAL_CHUNK = b"0\r\n\r\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


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
    with stopping_on_sigterm(), tempfile.TemporaryDirectory(prefix="relay-soak-") as tmp:
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


def start_stack(
    procs: Processes, port: int, result_ttl_seconds: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str, str]:
    """redis-server on ``port``, a worker, and the API on ``port + 1``; returns API, worker, API URL, Redis URL."""
    server = shutil.which("redis-server") or "redis-server"
    procs.start("redis", [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {})
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis.Redis.from_url(url).ping(), 10, "redis-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {"RELAY_REDIS_URL": url, "RELAY_WORKER_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
    env["RELAY_TASK_MODULES"] = "worker.tasks.demo"  # echo
    env["RELAY_RESULT_TTL_SECONDS"] = str(result_ttl_seconds)
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
    other_load: list[tuple[float, float]] = field(default_factory=list)  # t, cores other processes used since
    errors: int = 0


async def capacity(base: str, seconds: float, concurrency: int) -> float:
    """Streamed submits a second the stack completes with ``concurrency`` in flight (the soak's two clients
    alternating), after a two-second warm-up that is not counted."""
    port = int(base.rsplit(":", 1)[1])
    done = 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        start = time.monotonic()
        counting_from = start + 2.0

        async def loop(lane: int) -> None:
            nonlocal done
            index = lane
            while (now := time.monotonic()) < counting_from + seconds:
                await (curl_like(port) if index % 2 == 0 else with_httpx(http))
                index += 1
                if now >= counting_from and time.monotonic() < counting_from + seconds:
                    done += 1

        await asyncio.gather(*(loop(lane) for lane in range(concurrency)))
    return done / seconds


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
        others = OtherLoad()  # CPU of processes this soak did not start (other sessions): the noise
        while (now := time.monotonic() - t0) < duration:
            if now >= next_sample:
                run.other_load.append((now, others.cores()))
                others = OtherLoad()
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


def _growth(first: float, last: float) -> float:
    return (last - first) / first * 100 if first else float("nan")


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(args: argparse.Namespace, run: Run) -> str:
    lines = [f"soak: {args.rate:.0f}/s streamed submits for {args.minutes} min, {args.open_streams} streams held open"]
    if args.capacity is not None:
        lines[0] += f" (half of the {args.capacity:.0f}/s measured with {args.capacity_concurrency} in flight)"
    lines[0] += f"; results kept {args.result_ttl_seconds} s"
    lines.append("  t (s)   API RSS (MiB)   worker RSS (MiB)   Redis used_memory (MiB)")
    lines += [f"  {t:6.0f}  {api:14.1f}  {worker:17.1f}  {used:24.1f}" for t, api, worker, used in run.samples]
    end = args.minutes * 60
    warm = min(args.warmup_minutes * 60, end / 2)
    window = min(60.0, (end - warm) / 2)
    first = [s * 1000 for t, s in run.round_trips if t < window]
    after_warmup = [s * 1000 for t, s in run.round_trips if warm <= t < warm + window]
    last = [s * 1000 for t, s in run.round_trips if t >= end - window]
    lines.append(f"round trips: {len(run.round_trips)}, errors: {run.errors}")
    lines.append("  minute   round trips   p50 (ms)   p99 (ms)   other processes (cores)")
    for minute in range(math.ceil(end / 60)):
        within = [s * 1000 for t, s in run.round_trips if minute * 60 <= t < (minute + 1) * 60]
        other = [cores for t, cores in run.other_load if minute * 60 < t <= (minute + 1) * 60]
        load = sum(other) / len(other) if other else float("nan")
        lines.append(f"  {minute + 1:6d}  {len(within):12d}  {median(within):9.1f}  {p99(within):9.1f}  {load:24.2f}")
    p_first, p_warm, p_last = p99(first), p99(after_warmup), p99(last)
    lines.append(
        f"p99 round trip: first {window:.0f} s {p_first:.1f} ms; first {window:.0f} s after the warm-up "
        f"{p_warm:.1f} ms; last {window:.0f} s {p_last:.1f} ms"
    )
    base = next(sample for sample in run.samples if sample[0] >= warm)
    final = run.samples[-1]
    api, worker, used = (_growth(base[i], final[i]) for i in (1, 2, 3))
    lines.append(f"from the end of the warm-up ({base[0]:.0f} s) to the end:")
    lines.append(f"  API RSS {base[1]:.1f} -> {final[1]:.1f} MiB ({api:+.1f} %): <= 5 % {_verdict(api <= 5)}")
    lines.append(f"  worker RSS {base[2]:.1f} -> {final[2]:.1f} MiB ({worker:+.1f} %): <= 5 % {_verdict(worker <= 5)}")
    lines.append(
        f"  Redis used_memory {base[3]:.1f} -> {final[3]:.1f} MiB ({used:+.1f} %): flat (<= 5 %) {_verdict(used <= 5)}"
    )
    drift = _growth(p_warm, p_last)
    lines.append(
        f"  p99 last minute vs first after the warm-up: {drift:+.1f} %: at most 20 % slower {_verdict(drift <= 20)}"
    )
    lines.append(f"  (against the run's first minute: {_growth(p_first, p_last):+.1f} %)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, help="streamed submits a second (default: half the measured capacity)")
    parser.add_argument("--capacity-seconds", type=float, default=20, help="how long capacity is measured")
    parser.add_argument("--capacity-concurrency", type=int, default=32, help="submits in flight when measuring it")
    parser.add_argument("--warmup-minutes", type=float, default=2, help="judged from here on")
    parser.add_argument("--result-ttl-seconds", type=int, default=60, help="RELAY_RESULT_TTL_SECONDS of the stack")
    parser.add_argument("--open-streams", type=int, default=50)
    parser.add_argument("--sample-seconds", type=float, default=10)
    parser.add_argument("--port", type=int, default=8900, help="Redis on this port, the API on the next")
    args = parser.parse_args(argv)
    with processes() as procs:
        api, worker, base, redis_url = start_stack(procs, args.port, args.result_ttl_seconds)
        args.capacity = None
        if args.rate is None:
            args.capacity = asyncio.run(capacity(base, args.capacity_seconds, args.capacity_concurrency))
            args.rate = args.capacity / 2
            print(f"capacity {args.capacity:.0f}/s; soaking at {args.rate:.0f}/s", flush=True)
        run = asyncio.run(soak(args, api.pid, worker.pid, base, redis_url))
    text = report(args, run)
    print(text)
    return text


if __name__ == "__main__":
    main()
