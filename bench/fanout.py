"""2,000 SSE clients on ONE API process following live tasks: Redis connections, memory, delivery rate.

Usage: .venv/bin/python -m bench.fanout [--tasks 200] [--per-task 10] [--events 50] [--interval 0.1]
       [--connect-batch 100] [--app module:factory] [--profile]

``--tasks`` ``count`` tasks are submitted deferred by an hour, so nothing runs while the clients
(``bench.sse_clients``, in their own process) connect, ``--per-task`` streams per task. Then every
task is made due at once (its score in arq's queue set to now, plus a wake-up notice) and each emits
``started``, ``--events`` partials ``--interval`` seconds apart, ``result`` and ``end``.

Reported: the API process's Redis connections (its own TCP sockets to Redis, found in /proc and
matched to ``CLIENT LIST`` by address, sampled every 0.2 s), its peak RSS (VmHWM), events delivered
per second over all clients, how late they arrived (receive time minus the event's ``ts``), and how
many clients got every event in order. The client process's CPU is shown so it can be ruled out as
the bottleneck; everything shares the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from bench.common import (
    Bench,
    OtherLoad,
    RedisServer,
    bench_scope,
    cpu_seconds,
    peak_rss_mib,
    percentile,
    raise_nofile,
    rss_mib,
    run_queue_seconds,
    start_api_factory,
    table,
    wait_for_output,
)
from bench.harness.processes import BIN, ManagedProcess, relay_env, start_worker
from bench.profiling import sampled, summarize
from shared import keys
from shared.events import unpack

DEFER_SECONDS = 3600
DIRECT_SAMPLE = 10  # tasks whose channels the bench also subscribes to directly


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets ``pid`` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def local_ports_to(pid: int, remote_port: int) -> set[int]:
    """Local ports of ``pid``'s TCP connections to ``remote_port`` (from /proc/net/tcp)."""
    inodes = socket_inodes(pid)
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == remote_port:
            ports.add(int(local.split(":")[1], 16))
    return ports


@dataclass
class ConnectionSample:
    """The API's Redis connections at one moment."""

    total: int
    pubsub: int
    channels: int
    pubsub_omem: int = 0


def api_connections(client: redis.Redis, api_pid: int, redis_port: int) -> ConnectionSample:
    """Count the API's connections in ``CLIENT LIST``; pub/sub ones hold subscriptions."""
    ports = local_ports_to(api_pid, redis_port)
    mine = [c for c in client.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports]
    pubsub = [c for c in mine if int(c.get("sub", 0)) or "P" in c.get("flags", "")]
    omem = max((int(c.get("omem", 0)) for c in pubsub), default=0)
    return ConnectionSample(len(mine), len(pubsub), sum(int(c.get("sub", 0)) for c in pubsub), omem)


@dataclass
class Sampler:
    """Samples the API's Redis connections in a thread, by phase (``connect``, ``deliver``)."""

    client: redis.Redis
    api_pid: int
    redis_port: int
    phase: str = "connect"
    peaks: dict[str, ConnectionSample] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="conn-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def sample(self) -> ConnectionSample:
        now = api_connections(self.client, self.api_pid, self.redis_port)
        peak = self.peaks.get(self.phase)
        if peak is None:
            peak = self.peaks[self.phase] = ConnectionSample(0, 0, 0)
        peak.total = max(peak.total, now.total)
        peak.pubsub = max(peak.pubsub, now.pubsub)
        peak.channels = max(peak.channels, now.channels)
        peak.pubsub_omem = max(peak.pubsub_omem, now.pubsub_omem)
        return now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class DirectSubscriber:
    """Subscribes straight to a few tasks' channels, to split the lag into before and after Redis."""

    def __init__(self, url: str, ids: list[str]) -> None:
        self._client = redis.Redis.from_url(url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(*(keys.events_channel(i) for i in ids))
        self._lags: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="direct-subscriber", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None:  # one message may carry several events, a line each
                now = time.time()
                self._lags += [(now - json.loads(raw)["ts"]) * 1000 for raw in unpack(message["data"])]

    def stop(self) -> dict[str, float]:
        """Lag percentiles (ms) of everything received."""
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()
        lags = self._lags or [0.0]
        return {str(p): percentile(lags, p) for p in (50, 99)}


def submit_deferred(base: str, tasks: int, events: int, interval: float) -> list[str]:
    """``tasks`` ``count`` tasks, deferred so that none runs before every client follows it."""
    body = {"task": "count", "kwargs": {"n": events, "interval": interval}, "delay_seconds": DEFER_SECONDS}
    with httpx.Client(base_url=base, timeout=30) as http:
        return [http.post("/tasks", json=body).raise_for_status().json()["id"] for _ in range(tasks)]


def release(client: redis.Redis, queue: str, ids: list[str]) -> None:
    """Make every deferred task due now (arq runs a job once its score is in the past) and wake workers."""
    now_ms = int(time.time() * 1000)
    client.zadd(queue, dict.fromkeys(ids, now_ms), xx=True)
    client.publish(keys.wakeup_channel(queue), b"1")


def start_clients(
    bench: Bench, port: int, ids: list[str], per_task: int, expect: int, timeout: float, batch: int
) -> ManagedProcess:
    """The SSE client process; returns once every stream is connected."""
    ids_file = bench.log_dir / "ids.json"
    ids_file.write_text(json.dumps(ids))
    argv = [str(BIN / "python"), "-m", "bench.sse_clients", "--port", str(port), "--ids", str(ids_file)]
    argv += ["--per-task", str(per_task), "--expect", str(expect), "--timeout", str(timeout)]
    argv += ["--connect-batch", str(batch)]
    proc = bench.own(ManagedProcess("sse-clients", argv, relay_env("redis://unused"), bench.log_dir))
    wait_for_output(proc, "CONNECTED ", 120)
    return proc


def client_result(proc: ManagedProcess, timeout: float) -> dict[str, object]:
    """The client process's ``RESULT`` line, once it has exited."""
    proc.wait(timeout)
    line = next((ln for ln in proc.output().splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"the client process printed no result:\n{proc.output()[-4000:]}")
    result: dict[str, object] = json.loads(line.removeprefix("RESULT "))
    return result


@dataclass(frozen=True)
class Scenario:
    """What to run: the command-line flags."""

    tasks: int = 200
    per_task: int = 10
    events: int = 50
    interval: float = 0.1
    timeout: float = 120
    connect_batch: int = 100
    profile: bool = False
    app: str = "api.app:create_app"


def profiled(pid: int, seconds: float, out: Path | None) -> contextlib.AbstractContextManager[None]:
    """py-spy ``pid`` for ``seconds`` into ``out``; nothing when ``out`` is None."""
    return sampled(pid, seconds, out) if out is not None else contextlib.nullcontext()


def run(sc: Scenario) -> dict[str, object]:
    """The whole scenario; every process is stopped by PID when it ends."""
    raise_nofile()
    with bench_scope() as bench:
        server = bench.redis()
        queue = f"bench:fanout:{uuid.uuid4().hex[:8]}"
        env = relay_env(server.url, RELAY_QUEUE_NAME=queue, RELAY_WORKER_CONCURRENCY=str(sc.tasks + 10))
        worker = bench.own(start_worker(bench.log_dir, env))
        api_pid, base = start_api_factory(bench, env, sc.app)
        pids = {"api": api_pid, "worker": worker.pid, "redis": server.pid}
        raw = bench.log_dir / "api-fanout.raw" if sc.profile else None
        result = follow_all(bench, server, pids, base, queue, sc, raw)
        if raw is not None:
            result["profile"] = summarize(raw, top=45)
        return result


def follow_all(
    bench: Bench,
    server: RedisServer,
    pids: dict[str, int],
    base: str,
    queue: str,
    sc: Scenario,
    profile: Path | None,
) -> dict[str, object]:
    """Connect every client, release the tasks, and collect what each side measured."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    sampler = Sampler(client, pids["api"], server.port)
    try:
        idle = sampler.sample()
        ids = submit_deferred(base, sc.tasks, sc.events, sc.interval)
        port = int(base.rsplit(":", 1)[1])
        clients = start_clients(bench, port, ids, sc.per_task, sc.events + 3, sc.timeout, sc.connect_batch)
        rss_connected = rss_mib(pids["api"])
        sampler.phase = "deliver"
        direct = DirectSubscriber(server.url, ids[:DIRECT_SAMPLE])
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        waited = {name: run_queue_seconds(pid) for name, pid in pids.items()}
        others = OtherLoad()
        with profiled(pids["api"], sc.events * sc.interval + 1, profile):
            release(client, queue, ids)
            result = client_result(clients, sc.timeout + 30)
        cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
        waited = {name: run_queue_seconds(pid) - waited[name] for name, pid in pids.items()}
        other_cores = others.cores()
        after = sampler.sample()
        direct_lags = direct.stop()
    finally:
        sampler.stop()
        client.close()
    return {
        "clients": result,
        "idle": idle,
        "after": after,
        "peaks": sampler.peaks,
        "rss_connected_mib": rss_connected,
        "peak_rss_mib": peak_rss_mib(pids["api"]),
        "cpu_seconds": cpu,
        "run_queue_seconds": waited,
        "other_cores": other_cores,
        "direct_lag_ms": direct_lags,
    }


def report(r: dict[str, object], sc: Scenario) -> str:
    """Two tables: Redis connections per phase, then delivery."""
    c: dict[str, object] = r["clients"]  # type: ignore[assignment]
    peaks: dict[str, ConnectionSample] = r["peaks"]  # type: ignore[assignment]
    idle: ConnectionSample = r["idle"]  # type: ignore[assignment]
    after: ConnectionSample = r["after"]  # type: ignore[assignment]
    conn_rows = [_conn_row("idle (before submits)", idle)]
    conn_rows += [
        _conn_row(f"peak while {phase}ing", peaks[phase]) for phase in ("connect", "deliver") if phase in peaks
    ]
    conn_rows.append(_conn_row("after the run", after))
    window = float(c["last_event"]) - float(c["first_event"])  # type: ignore[arg-type]
    lag: dict[str, float] = c["lag_ms"]  # type: ignore[assignment]
    direct: dict[str, float] = r["direct_lag_ms"]  # type: ignore[assignment]
    cpu: dict[str, float] = r["cpu_seconds"]  # type: ignore[assignment]
    waited: dict[str, float] = r["run_queue_seconds"]  # type: ignore[assignment]
    delivery = [
        ["streams connected", f"{c['connected']}/{c['streams']} in {float(c['connect_seconds']):.1f} s"],  # type: ignore[arg-type]
        ["clients with every event, in order", f"{c['complete']}/{c['streams']}"],
        ["events delivered", f"{c['events']:,}/{c['expected_events']:,}"],
        ["delivery window (first to last event)", f"{window:.2f} s (tasks emit for {sc.events * sc.interval:.1f} s)"],
        ["delivered events/s (all clients)", f"{int(c['events']) / window:,.0f}" if window else "-"],  # type: ignore[call-overload]
        ["lag p50 / p90 / p99 / max", " / ".join(f"{lag[k]:.0f}" for k in ("50", "90", "99", "100")) + " ms"],
        ["worst lag in each second of the run", ", ".join(str(v) for v in c["worst_lag_by_second"]) + " ms"],  # type: ignore[attr-defined]
        ["lag at a direct Redis subscriber p50 / p99", " / ".join(f"{direct[k]:.0f}" for k in ("50", "99")) + " ms"],
        ["API CPU per delivered event", f"{1e6 * cpu['api'] / max(int(c['events']), 1):.0f} us"],  # type: ignore[call-overload]
        [
            "CPU while delivering: API / worker / Redis",
            " / ".join(f"{100 * cpu[k] / window:.0f} %" for k in ("api", "worker", "redis")) if window else "-",
        ],
        [
            "waiting for a CPU: API / worker / Redis",
            " / ".join(f"{waited[k]:.2f} s" for k in ("api", "worker", "redis")),
        ],
        ["API RSS: all connected / peak (VmHWM)", f"{r['rss_connected_mib']:.0f} / {r['peak_rss_mib']:.0f} MiB"],
        ["client process CPU (whole run)", f"{float(c['cpu_seconds']):.1f} s"],  # type: ignore[arg-type]
        ["other processes on the machine meanwhile", f"{float(r['other_cores']):.2f} cores"],  # type: ignore[arg-type]
    ]
    title = (
        f"{sc.app}: {sc.tasks} tasks x {sc.per_task} SSE clients (opened {sc.connect_batch} at a time), "
        f"{sc.events + 3} events per task ({sc.events} partials, {sc.interval:g} s apart)"
    )
    return "\n".join(
        [
            title,
            table(
                ["API process Redis connections", "total", "pub/sub", "channels subscribed", "pub/sub output buffer"],
                conn_rows,
            ),
            "",
            table(["delivery", "value"], delivery),
        ]
    )


def _conn_row(label: str, s: ConnectionSample) -> list[object]:
    return [label, s.total, s.pubsub, s.channels, f"{s.pubsub_omem / 1024:,.0f} KiB"]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Scenario()
    parser.add_argument("--tasks", type=int, default=d.tasks)
    parser.add_argument("--per-task", type=int, default=d.per_task, help="SSE clients following each task")
    parser.add_argument("--events", type=int, default=d.events, help="partial events per task")
    parser.add_argument("--interval", type=float, default=d.interval, help="seconds between a task's partials")
    parser.add_argument("--timeout", type=float, default=d.timeout, help="bound on the delivery phase")
    parser.add_argument("--connect-batch", type=int, default=d.connect_batch, help="streams the clients open at once")
    parser.add_argument("--profile", action="store_true", help="py-spy the API while it delivers (slows it)")
    parser.add_argument("--app", default=d.app, help="API factory (module:function), default Relay's")
    args = parser.parse_args(argv)
    sc = Scenario(**{k: v for k, v in vars(args).items()})
    result = run(sc)
    output = report(result, sc)
    if "profile" in result:
        output += "\n\npy-spy of the API while delivering (a profiled run: its numbers above are slower):\n"
        output += str(result["profile"])
    print(output, flush=True)
    return output


if __name__ == "__main__":
    main()
