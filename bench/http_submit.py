"""HTTP submit throughput of one API process, against a bare Sanic app as the ceiling, measured side by side.

Usage: .venv/bin/python -m bench.http_submit [--seconds 8] [--rounds 5] [--connections 50] [--tree DIR]
    [--quiet-below CORES] [--profile] [--wait-replicas N]

``POST /tasks`` of ``echo`` from ``--connections`` keep-alive connections for ``--seconds``, with
wrk (``apt-get install -y wrk``) when installed, else ``bench.loadgen``. No worker runs, so the
queue only grows (``RELAY_MAX_QUEUE_DEPTH`` is 10,000,000); the queue's growth is checked against the
2xx count. The load generator runs on the same 2 cores as the server and Redis: these are numbers for
this box, not for a server with a client elsewhere.

Every server runs for the whole benchmark and is measured once per round, in turn (the order reversed
every other round), so on a machine other work shares a slow moment hits every server alike: each
round gives each Relay API's ratio to bare Sanic in that round, and the report gives the medians.
``--quiet-below 0.3`` waits before each run until other processes use less than 0.3 cores (for at most a
minute: each run's ``other load`` says how quiet it was), and gives the medians of the rounds whose every run
stayed below that too.

``--tree DIR`` also measures the API of another checkout (``git worktree add /tmp/base <rev>``) on the
same Redis, in the same rounds: before and after, side by side. ``--wait-replicas N`` gives the Redis
N replicas and adds a Relay API with ``RELAY_REDIS_WAIT_REPLICAS=N`` (a 202 only once N replicas have the
job): WAIT's cost. After the rounds, each Relay API's Redis commands per submit are counted with
``MONITOR`` (a separate run: MONITOR slows Redis), by command, with one client and with all
``--connections``: those a submit sends and those its scripts run inside Redis. ``--profile`` adds a
py-spy run of this tree's API.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shlex
import shutil
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.common import (
    Bench,
    OtherLoad,
    bench_scope,
    cpu_seconds,
    peak_rss_mib,
    start_api_factory,
    table,
    wait_until_quiet,
)
from bench.harness.processes import BIN, ManagedProcess, free_port, relay_env, wait_until
from bench.loadgen import run_load
from bench.profiling import sampled, summarize
from shared.scripts import source

BODY = b'{"task":"echo","kwargs":{"message":"hello"}}'
LUA = Path(__file__).with_name("wrk_submit.lua")
MAX_REQUESTS = 2_000_000  # bound for the Python client (wrk is bounded by --seconds)
BARE = "bare Sanic"
COUNT_SECONDS = 3.0  # each MONITOR run
NOT_SUBMITS = frozenset({"info", "monitor", "ping", "client", "hello", "config", "select"})  # the bench's own


@dataclass(frozen=True)
class Target:
    """A server under load: its label, PID and port; ``relay`` if it enqueues (its queue growth is checked)."""

    label: str
    pid: int
    port: int
    relay: bool = True


@dataclass(frozen=True)
class SubmitResult:
    """One timed run against one target."""

    target: str
    round: int
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


@dataclass(frozen=True)
class CommandCount:
    """Redis commands per accepted submit of one target, by command: sent by the API (``client``) and run
    by its scripts inside Redis (``scripts``)."""

    target: str
    connections: int
    submits: int
    client: dict[str, float]
    scripts: dict[str, float]


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
    return Target(BARE, proc.pid, port, relay=False)


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
    due, deferred, *_ = client.register_script(source("counts"))(keys=[queue_name])
    return int(due) + int(deferred)


def measure(
    target: Target, round_: int, connections: int, seconds: float, queue: redis.Redis, name: str, quiet: float = 0
) -> SubmitResult:
    """A 1 s warm-up, then the timed run; counts the queue's growth during the timed run. With ``quiet``, first
    waits (up to a minute) until other processes use less than that many cores."""
    if quiet:
        wait_until_quiet(quiet, max_wait=60, window=2)
    load(target.port, connections, 1)
    before = waiting_jobs(queue, name) if target.relay else 0
    cpu, others = cpu_seconds(target.pid), OtherLoad()
    client, summary = load(target.port, connections, seconds)
    cpu, other_cores = cpu_seconds(target.pid) - cpu, others.cores()
    enqueued = waiting_jobs(queue, name) - before if target.relay else None
    return SubmitResult(target.label, round_, client, summary, cpu, peak_rss_mib(target.pid), enqueued, other_cores)


def tree_label(tree: Path) -> str:
    """``Relay API at <short commit>`` for another checkout."""
    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return f"Relay API at {rev.stdout.strip() or tree}"


def run(
    seconds: float,
    connections: int,
    rounds: int,
    profile: bool = False,
    apps: list[str] | None = None,
    trees: list[Path] | None = None,
    wait_replicas: int = 0,
    count: bool = True,
    quiet: float = 0,
) -> tuple[list[SubmitResult], list[CommandCount], str]:
    """Start every server (this tree's Relay API, bare Sanic, then any ``trees``' APIs, a WAIT API with
    ``wait_replicas``, any patched ``apps``), measure each once per round, then count each Relay API's Redis
    commands per submit; optionally a profiled run of this tree's API."""
    with bench_scope() as bench:
        server = bench.redis()
        bench.replicas(server, wait_replicas)
        name = f"bench:submit:{uuid.uuid4().hex[:8]}"
        env = relay_env(server.url, RELAY_QUEUE_NAME=name, RELAY_MAX_QUEUE_DEPTH="10000000")
        targets = [api_target(bench, env, f"Relay API ({wait_replicas} replicas, no WAIT)" if wait_replicas else "")]
        targets.append(start_hello(bench))
        for tree in trees or []:
            tree_env = env | {"PYTHONPATH": str(tree.resolve())}  # its api/ and shared/ before this tree's
            targets.append(api_target(bench, tree_env, tree_label(tree)))
        if wait_replicas:
            wait_env = env | {"RELAY_REDIS_WAIT_REPLICAS": str(wait_replicas)}
            targets.append(api_target(bench, wait_env, f"Relay API, WAIT {wait_replicas}"))
        for app in apps or []:
            targets.append(api_target(bench, env, app.rsplit(":", 1)[1], app))
        client = redis.Redis.from_url(server.url)
        try:
            results: list[SubmitResult] = []
            for round_ in range(1, rounds + 1):
                order = targets if round_ % 2 else targets[::-1]
                results += [measure(t, round_, connections, seconds, client, name, quiet) for t in order]
            counts: list[CommandCount] = []
            if count:
                for target in (t for t in targets if t.relay):
                    counts += [count_commands(bench, server.port, target, c) for c in (1, connections)]
            notes = profile_api(bench, targets[0], connections) if profile else ""
        finally:
            client.close()
    return results, counts, notes


def api_target(bench: Bench, env: dict[str, str], label: str, factory: str = "api.app:create_app") -> Target:
    """A Relay API (``factory``) started on ``env``."""
    pid, base = start_api_factory(bench, env, factory)
    return Target(label or "Relay API", pid, int(base.rsplit(":", 1)[1]))


def count_commands(bench: Bench, redis_port: int, target: Target, connections: int) -> CommandCount:
    """``MONITOR`` Redis while ``target`` takes submits from ``connections`` clients: commands per submit."""
    cli = shutil.which("redis-cli") or str(Path(shutil.which("redis-server") or "redis-server").with_name("redis-cli"))
    out = bench.log_dir / f"monitor-{target.port}-{connections}.txt"
    load(target.port, connections, 1)  # warm: the same state as the timed runs
    with out.open("wb") as sink:
        monitor = subprocess.Popen([cli, "-p", str(redis_port), "monitor"], stdout=sink, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)  # MONITOR is on before the first submit
            _client, summary = load(target.port, connections, COUNT_SECONDS)
            time.sleep(0.3)  # the last replies' commands are written out
        finally:
            monitor.terminate()
            monitor.wait(10)
    submits = int(summary["requests"] - summary["status_errors"])
    client_cmds, script_cmds = monitored(out)
    return CommandCount(
        target.label,
        connections,
        submits,
        {c: n / submits for c, n in client_cmds.items()},
        {c: n / submits for c, n in script_cmds.items()},
    )


def monitored(path: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Commands in a ``MONITOR`` log, by name: sent by clients, and run by scripts (``[0 lua]``)."""
    client: collections.Counter[str] = collections.Counter()
    scripts: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        _, _, rest = line.partition(" [")
        source_, _, command = rest.partition("] ")
        if not command:
            continue  # "OK", or a line cut off at the end
        try:
            verb = shlex.split(command[:200].split(" ", 1)[0])[0].lower()
        except ValueError:
            continue
        if verb in NOT_SUBMITS:
            continue
        (scripts if source_.endswith(" lua") else client)[verb] += 1
    return client, scripts


def profile_api(bench: Bench, target: Target, connections: int, seconds: float = 8) -> str:
    """py-spy the API under the same load (a separate run: sampling slows the process)."""
    raw = bench.log_dir / "api-submit.raw"
    with sampled(target.pid, seconds, raw):
        time.sleep(0.5)
        load(target.port, connections, seconds - 1)
    return "py-spy of the Relay API under submit load:\n" + summarize(raw, top=40)


def report(results: list[SubmitResult], counts: list[CommandCount], quiet: float = 0) -> str:
    """Every round's runs and ratios, the medians (also over the quiet rounds alone, with ``quiet``), and the
    Redis commands per submit."""
    bare = {r.round: r.per_second for r in results if r.target == BARE}
    rows = [
        [
            r.round,
            r.target,
            r.client,
            f"{r.ok:,}",
            "-" if r.enqueued is None else f"{r.enqueued:,}",
            f"{r.per_second:,.0f}",
            "-" if r.target == BARE else f"{r.per_second / bare[r.round]:.2f}",
            f"{r.summary['p50_us'] / 1000:.1f}",
            f"{r.summary['p99_us'] / 1000:.1f}",
            f"{100 * r.server_cpu_seconds / (r.summary['duration_us'] / 1e6):.0f} %",
            f"{r.ok / max(r.server_cpu_seconds, 1e-9):,.0f}",
            f"{r.peak_rss_mib:.0f}",
            f"{r.other_cores:.2f}",
        ]
        for r in results
    ]
    headers = ["round", "server", "client", "2xx", "enqueued", "2xx/s", "x bare Sanic", "p50 ms", "p99 ms"]
    headers += ["server CPU", "2xx per CPU-second", "peak RSS MiB", "other load (cores)"]
    lines = [table(headers, rows), "", medians(results, bare)]
    if quiet:
        calm = {r.round for r in results} - {r.round for r in results if r.other_cores >= quiet}
        lines += ["", f"Rounds in which every run had other load below {quiet:g} cores: {sorted(calm) or 'none'}"]
        if calm:
            lines.append(medians([r for r in results if r.round in calm], bare))
    if counts:
        lines += ["", command_table(counts)]
    return "\n".join(lines)


def medians(results: list[SubmitResult], bare: dict[int, float]) -> str:
    """Per server: the median rate and the median of its per-round ratios to bare Sanic."""
    rows = []
    for label in dict.fromkeys(r.target for r in results):
        runs = [r for r in results if r.target == label]
        ratios = [r.per_second / bare[r.round] for r in runs]
        rows.append(
            [
                label,
                f"{statistics.median(r.per_second for r in runs):,.0f}",
                "-" if label == BARE else f"{statistics.median(ratios):.2f}",
                "-" if label == BARE else ", ".join(f"{x:.2f}" for x in ratios),
                f"{min(r.other_cores for r in runs):.2f} to {max(r.other_cores for r in runs):.2f}",
            ]
        )
    headers = ["server", "median 2xx/s", "median x bare Sanic", "x bare Sanic per round", "other load (cores)"]
    return table(headers, rows)


def command_table(counts: list[CommandCount]) -> str:
    """Redis commands per submit, by command."""

    def shown(per: dict[str, float]) -> str:
        return ", ".join(f"{c.upper()} {n:.2f}" for c, n in sorted(per.items(), key=lambda kv: -kv[1]) if n >= 0.005)

    rows = [
        [
            c.target,
            c.connections,
            f"{c.submits:,}",
            f"{sum(c.client.values()):.2f}",
            shown(c.client) or "-",
            f"{sum(c.scripts.values()):.2f}",
            shown(c.scripts) or "-",
        ]
        for c in counts
    ]
    headers = ["server", "clients", "submits", "sent per submit", "by command", "in scripts per submit", "by command"]
    return "Redis commands per submit (MONITOR, a separate run):\n" + table(headers, rows)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8, help="length of each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds: every server measured once in each")
    parser.add_argument("--connections", type=int, default=50, help="concurrent keep-alive connections")
    parser.add_argument("--tree", type=Path, action="append", default=[], help="also measure this checkout's API")
    parser.add_argument("--profile", action="store_true", help="also py-spy the API under load")
    parser.add_argument("--app", action="append", default=[], help="also measure this API factory (repeatable)")
    parser.add_argument("--wait-replicas", type=int, default=0, help="also measure WAIT for this many replicas")
    parser.add_argument("--no-count", action="store_true", help="skip counting Redis commands per submit")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0,
        metavar="CORES",
        help="before each run, wait (up to 1 min) until other processes use less than this many cores",
    )
    args = parser.parse_args(argv)
    if any(not (tree / "api" / "app.py").exists() for tree in args.tree):
        parser.error("--tree must name a Relay checkout")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results, counts, notes = run(
        args.seconds,
        args.connections,
        args.rounds,
        args.profile,
        args.app,
        args.tree,
        args.wait_replicas,
        not args.no_count,
        args.quiet_below,
    )
    head = f"bench.http_submit, {started}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end"
    output = head + "\n" + report(results, counts, args.quiet_below) + (f"\n\n{notes}" if notes else "")
    print(output, flush=True)
    return output


if __name__ == "__main__":
    main()
