"""Helpers every benchmark shares: process lifetimes, Redis pools, /proc readings and result tables.

Processes are started with ``bench.harness.processes`` (the same helpers the e2e tests use) and are
always stopped by their own PID through an ``ExitStack``, whether the benchmark passes or fails, or is stopped
with SIGTERM (``stopping_on_sigterm``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from bench.harness.processes import (
    BIN,
    DEMO_TASK_MODULES,
    ManagedProcess,
    free_port,
    offer_tasks,
    start_redis,
    wait_until,
)
from bench.harness.redis_servers import start_server
from shared.serialization import dumps, loads

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile(wanted: int = 65536) -> int:
    """Lift this process's open-file limit as far as allowed; children started later inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Bench:
    """A private scratch directory and every process started in it, stopped (by PID) on exit."""

    log_dir: Path
    stack: contextlib.ExitStack

    def own(self, proc: ManagedProcess) -> ManagedProcess:
        """Stop ``proc`` when the benchmark ends (last started, first stopped)."""
        self.stack.callback(proc.stop)
        return proc

    def redis(self) -> RedisServer:
        """A private redis-server on a free port, without persistence."""
        proc, url = start_redis(self.log_dir)
        self.own(proc)
        return RedisServer(url, proc.pid, int(url.rsplit(":", 1)[1].split("/")[0]))

    def replicas(self, primary: RedisServer, count: int) -> None:
        """``count`` replicas of ``primary`` (what ``RELAY_REDIS_WAIT_REPLICAS`` waits for), synced on return."""
        for _ in range(count):
            replica = start_server(self.log_dir, "--replicaof", "127.0.0.1", str(primary.port), name="replica")
            self.own(replica.proc)
        client = redis.Redis(port=primary.port)
        try:
            wait_until(lambda: int(client.info("replication")["connected_slaves"]) >= count, 30, "replicas")
            wait_until(lambda: client.wait(count, 100) >= count, 30, "replicas to acknowledge")
        finally:
            client.close()


@dataclass(frozen=True)
class RedisServer:
    """Where the benchmark's private Redis listens, and its PID (to read its CPU time)."""

    url: str
    pid: int
    port: int


@contextlib.contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """Inside this block SIGTERM ends the benchmark as Ctrl-C does, by an exception, so that the blocks that stop its
    processes run: Python's default SIGTERM exits at once and left its redis-server, API and workers running. Only
    in the main thread, and only where SIGTERM still has its default action (a harness's own handler stays)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def end(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, end)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def bench_scope() -> Iterator[Bench]:
    """Everything a benchmark starts lives inside this block."""
    with (
        stopping_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        yield Bench(Path(tmp), stack)


def arq_pool(url: str, max_connections: int | None = None) -> ArqRedis:
    """An arq client that serializes jobs exactly as the API does (JSON, never pickle)."""
    return ArqRedis(
        connection_pool=ConnectionPool.from_url(url, max_connections=max_connections),
        job_serializer=dumps,
        job_deserializer=loads,
    )


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: no interpolation, so p99 of 200 samples is a real sample."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    return _status_kib(pid, "VmHWM") / 1024


def rss_mib(pid: int) -> float:
    """The process's current resident set (VmRSS), in MiB."""
    return _status_kib(pid, "VmRSS") / 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_queue_seconds(pid: int) -> float:
    """Time the process's threads were runnable but waiting for a CPU (``/proc/<pid>/task/*/schedstat``).

    On a 2-core box shared by Redis, workers, an API and a load generator, this tells "slow because
    busy" from "slow because another process had the core"."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def _process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) for every process on the machine."""
    table_: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        table_[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return table_


def _foreign(table_: dict[int, tuple[int, float]]) -> dict[int, float]:
    """CPU seconds of the processes that are neither this benchmark nor started by it."""
    ours = {os.getpid()}
    grew = True
    while grew:
        before = len(ours)
        ours |= {pid for pid, (ppid, _) in table_.items() if ppid in ours}
        grew = len(ours) > before
    return {pid: cpu for pid, (_, cpu) in table_.items() if pid not in ours}


class OtherLoad:
    """CPU that *other* processes (another session's test run, say) used while a benchmark ran.

    The machine has 2 cores; anything else busy on it makes every number here worse, so each
    benchmark reports this next to its results. Processes that start and exit inside the window are
    missed, so it is a lower bound."""

    def __init__(self) -> None:
        self._start = _foreign(_process_table())
        self._began = time.monotonic()

    def cores(self) -> float:
        """Average cores used by other processes since this object was made."""
        now = _foreign(_process_table())
        used = sum(cpu - self._start[pid] for pid, cpu in now.items() if pid in self._start)
        return used / max(time.monotonic() - self._began, 1e-9)


def wait_until_quiet(max_cores: float = 0.25, max_wait: float = 300.0, window: float = 3.0) -> float:
    """Wait (at most ``max_wait`` s) until other processes use under ``max_cores``; returns their last load."""
    deadline = time.monotonic() + max_wait
    while True:
        probe = OtherLoad()
        time.sleep(window)
        load = probe.cores()
        if load < max_cores or time.monotonic() > deadline:
            return load


def wait_for_output(proc: ManagedProcess, marker: str, timeout: float) -> None:
    """Block until ``proc`` has printed ``marker`` (fail early if it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-4000:]}")
        if marker in proc.output():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not print {marker!r} within {timeout}s")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (what BENCHMARKS.md quotes verbatim)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine_facts() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "unknown",
    )
    server = shutil.which("redis-server")
    redis_version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout if server else ""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "redis": redis_version.split()[2].removeprefix("v=") if redis_version else "not installed",
        "kernel": platform.release(),
    }


def start_api_factory(bench: Bench, env: dict[str, str], factory: str = "api.app:create_app") -> tuple[int, str]:
    """An API process from ``factory`` (Relay's, or any other ``module:factory``); (pid, base URL). The demo
    tasks are offered on its queue as a live worker would (``offer_tasks``), so the API accepts them
    whether or not the benchmark runs a worker."""
    modules = env.get("RELAY_TASK_MODULES", DEMO_TASK_MODULES)
    offer_tasks(env["RELAY_REDIS_URL"], env.get("RELAY_QUEUE_NAME", "relay:queue"), modules)
    port = free_port()
    argv = [str(BIN / "sanic"), factory, "--factory", "--single-process", "--no-motd"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = bench.own(ManagedProcess("api", argv, env, bench.log_dir))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"the API exited early:\n{proc.output()[-4000:]}")
        try:
            return httpx.get(f"{base}/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 20, f"the API on {base} to be ready")
    return proc.pid, base
