"""Runs every measurement of every system, round-robin across systems and rounds, on one private Redis.

Each round visits the systems in a rotated order (so drift and bursts of outside load hit all of them
alike); for each system and worker profile one block starts a worker, measures it idle, starts a client
process (and, for Relay, an API process), measures round trips (at random arrival, then back to back),
commands per task under load, chains of N steps for the systems that have them (against the same steps as
single submits), and two drains (no-op jobs, jobs that await once; which goes first alternates by round),
then stops everything by PID and flushes Redis. No-op drains with 1, 2 and 4 workers follow for the systems
that scale out; ``--workloads`` picks which of these run. A failing block is recorded and the run goes on.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from bench.common import Bench, OtherLoad, RedisServer, bench_scope, wait_until_quiet
from bench.harness.processes import BIN, ManagedProcess, free_port, wait_until
from bench.peers import measure, venv
from bench.peers.client import Target
from bench.peers.processes import ClientSession, WorkerGroup
from bench.peers.spec import (
    AWAIT_ONCE,
    CHAIN,
    DEFAULT_WORKLOADS,
    DRAIN,
    IDLE,
    LOAD,
    NO_OP,
    ROUND_TRIP,
    SINGLES,
    Profile,
    System,
    Variant,
)
from bench.peers.systems import SYSTEMS


@dataclass
class Options:
    systems: tuple[str, ...]
    jobs: int = 10_000
    rounds: int = 3
    rt_requests: int = 500
    rt_short_requests: int = 20  # for clients that poll every 0.2-0.5 s at their defaults
    rt_max_pause: float = 0.020  # random arrival: a pause drawn uniformly from 0 to this many s before each request
    idle_seconds: float = 10.0
    settle_seconds: float = 2.0
    load_tasks: int = 500
    load_clients: int = 10
    scale_workers: tuple[int, ...] = (1, 2, 4)
    max_other_load: float = 0.25  # cores; a measurement above it is marked noisy and left out of medians
    wait_quiet: float = 30.0  # before each block, wait up to this long for outside load to drop
    drain_timeout: float = 600.0
    workloads: frozenset[str] = frozenset(DEFAULT_WORKLOADS)
    chain_steps: tuple[int, ...] = (10, 100)  # N: steps per chain, each measured
    chains: int = 5  # chains of N steps run one after another per round (their ms and Redis commands)
    chain_at_once: int = 10  # then this many chains of N started together (throughput; 0 skips)


@dataclass
class Failure:
    system: str
    profile: str
    round: int
    stage: str
    message: str


@dataclass
class Results:
    options: Options
    idles: list[measure.Idle] = field(default_factory=list)
    round_trips: list[measure.RoundTrip] = field(default_factory=list)
    loads: list[measure.Load] = field(default_factory=list)
    drains: list[measure.Drain] = field(default_factory=list)
    scaling: list[measure.Drain] = field(default_factory=list)
    chains: list[measure.Chain] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    quiet_waits: list[float] = field(default_factory=list)
    started_pids: list[int] = field(default_factory=list)
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    redis_version: str = ""
    loadavg_before: str = ""
    loadavg_after: str = ""
    other_cores: float = 0.0  # mean over 5 s windows
    other_cores_max: float = 0.0
    seconds: float = 0.0


@dataclass
class _Context:
    options: Options
    bench: Bench
    server: RedisServer
    client: redis.Redis
    results: Results
    stage: str = ""


def _python(system: System) -> Path:
    return venv.bin_dir() / "python" if system.venv == "peers" else Path(sys.executable)


def _bin(system: System) -> Path:
    return _python(system).parent


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _workers(ctx: _Context, system: System, profile: Profile, count: int = 1) -> Iterator[WorkerGroup]:
    """Started, ready workers, stopped by PID when the block ends (pass or fail)."""
    group = WorkerGroup()
    try:
        group.launch(system, profile, _bin(system), ctx.server.url, ctx.bench.log_dir, count)
        ctx.results.started_pids += [p.pid for p in group.procs]
        group.wait_ready(system, ctx.client)
        yield group
    finally:
        group.stop()
        ctx.results.started_pids += list(group.seen)


@contextlib.contextmanager
def _session(ctx: _Context, system: System, api_url: str | None = None) -> Iterator[ClientSession]:
    target = Target(ctx.server.url, api_url)
    session = ClientSession(system, _python(system), target, system.worker_env(ctx.server.url), ctx.bench.log_dir)
    ctx.results.started_pids.append(session.pid)
    try:
        yield session
    finally:
        session.stop()


@contextlib.contextmanager
def _api(ctx: _Context, system: System, wanted: bool) -> Iterator[str | None]:
    """Relay's API process, for the blocks that send requests through it."""
    if not wanted:
        yield None
        return
    port = free_port()
    argv = [str(BIN / "sanic"), "api.app:create_app", "--factory", "--single-process", "--no-motd"]
    proc = ManagedProcess(
        "api", [*argv, "--host", "127.0.0.1", "--port", str(port)], system.worker_env(ctx.server.url), ctx.bench.log_dir
    )
    ctx.results.started_pids.append(proc.pid)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _api_ready(proc, base), 30, f"the API on {base} to be ready")
        yield base
    finally:
        proc.stop()


def _api_ready(proc: ManagedProcess, base: str) -> bool:
    if proc.proc.poll() is not None:
        raise RuntimeError(f"the API exited early:\n{proc.output()[-4000:]}")
    try:
        return httpx.get(f"{base}/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


SINGLES_VARIANT = Variant(SINGLES, "N single submits, each awaited and its result passed into the next by the client")


def measures(options: Options, system: System, profile: Profile) -> frozenset[str]:
    """What runs on ``profile``: its measures that ``--workloads`` picked, chains on a system's main profile."""
    chain = {CHAIN} if system.chains and profile == system.main_profile else set()
    return (profile.measures | chain) & options.workloads


def run_block(ctx: _Context, system: System, profile: Profile, round_: int) -> None:
    """One worker of ``system`` in ``profile``: idle, round trips, commands per task, chains, drains."""
    opts, res = ctx.options, ctx.results
    wanted = measures(opts, system, profile)
    ctx.stage = "start worker"
    with _workers(ctx, system, profile) as group:
        if IDLE in wanted and opts.idle_seconds > 0:
            ctx.stage = "idle"
            res.idles.append(
                measure.idle(system, profile.name, round_, ctx.client, opts.idle_seconds, opts.settle_seconds)
            )
            _log(f"  idle: {res.idles[-1].per_second:.1f} commands/s")
        needs_api = system.api and bool(wanted & {ROUND_TRIP, LOAD, CHAIN})
        ctx.stage = "start clients"
        with contextlib.ExitStack() as clients:
            with _api(ctx, system, needs_api) as api_url:  # stopped before the drain: it would only add noise
                session = clients.enter_context(_session(ctx, system, api_url))
                _round_trips_and_load(ctx, system, profile, round_, session, wanted)
                if CHAIN in wanted:
                    _chains(ctx, system, profile, round_, session)
            if DRAIN in wanted and opts.jobs > 0:
                workloads = (NO_OP, AWAIT_ONCE) if round_ % 2 else (AWAIT_ONCE, NO_OP)
                for workload in workloads:
                    ctx.stage = f"drain ({workload})"
                    res.drains.append(_drain(ctx, system, profile, round_, group, session, workload))


def _round_trips_and_load(
    ctx: _Context, system: System, profile: Profile, round_: int, session: ClientSession, wanted: frozenset[str]
) -> None:
    """Sequential round trips for each variant (at random arrival, then back to back; a client that polls every
    0.2 s or more at its defaults only at random arrival), then the commands-per-task run with concurrent clients."""
    opts, res = ctx.options, ctx.results
    for variant in profile.variants if ROUND_TRIP in wanted else ():
        n = opts.rt_short_requests if variant.short else opts.rt_requests
        pauses = (opts.rt_max_pause,) if variant.short else (opts.rt_max_pause, 0.0)
        for max_pause in pauses if n > 0 else ():
            ctx.stage = f"round trip ({variant.name}, pause up to {max_pause * 1000:g} ms)"
            rt = measure.round_trip(system, profile.name, round_, session, variant, n, max_pause)
            res.round_trips.append(rt)
            _log(f"  round trip {variant.name}, {rt.arrival}: median {sorted(rt.ms)[len(rt.ms) // 2]:.1f} ms")
    if LOAD in wanted and profile.load_variant and opts.load_tasks > 0:
        ctx.stage = "commands per task"
        waiting, n, clients = profile.load_variant, opts.load_tasks, opts.load_clients
        res.loads.append(measure.load(system, profile.name, round_, session, waiting, n, clients))
        _log(f"  commands/task with {clients} clients: {res.loads[-1].per_task:.1f}")


def _chains(ctx: _Context, system: System, profile: Profile, round_: int, session: ClientSession) -> None:
    """For each N: the native chain variants and the single submits beside them (which goes first alternates)."""
    opts = ctx.options
    variants = [*system.chains, SINGLES_VARIANT]
    for steps in opts.chain_steps:
        for variant in variants if round_ % 2 else reversed(variants):
            ctx.stage = f"chain ({variant.name}, {steps} steps)"
            timeout = 60 + (opts.chains + 2 + opts.chain_at_once) * steps * 0.5  # 0.5 s a step: hung, not slow
            n, at_once = opts.chains, opts.chain_at_once
            c = measure.chain(system, profile.name, round_, session, variant, steps, n, at_once, timeout)
            ctx.results.chains.append(c)
            p50 = sorted(c.ms)[len(c.ms) // 2]
            rate = f", {c.at_once} at once: {c.steps_per_second:,.0f} steps/s" if c.at_once else ""
            _log(f"  chain {variant.name} x{steps}: p50 {p50:.1f} ms, {c.per_step:.1f} commands/step{rate}")


def _drain(
    ctx: _Context,
    system: System,
    profile: Profile,
    round_: int,
    group: WorkerGroup,
    session: ClientSession,
    workload: str = NO_OP,
) -> measure.Drain:
    d = measure.drain(
        system,
        profile.name,
        round_,
        group,
        session,
        ctx.client,
        ctx.server.pid,
        ctx.options.jobs,
        ctx.options.drain_timeout,
        workload,
    )
    rate = f"{d.jobs_per_second:,.0f} jobs/s, verified {d.verified}/{d.jobs}, early {d.early}"
    _log(f"  drain ({workload}) x{d.workers}: {rate}")
    return d


def run_scaling(ctx: _Context, system: System, workers: int, round_: int) -> None:
    ctx.stage = f"drain with {workers} workers"
    profile = system.main_profile
    with _workers(ctx, system, profile, workers) as group, _session(ctx, system) as session:
        ctx.results.scaling.append(_drain(ctx, system, profile, round_, group, session))


def _guarded(ctx: _Context, system: System, profile: str, round_: int, block: Callable[[], None]) -> None:
    """Run one block; a failure is recorded (with the stage it happened in) and the run goes on."""
    try:
        block()
    except Exception as exc:  # one system failing must not hide the others' numbers
        message = "".join(traceback.format_exception_only(exc)).strip()[-3000:]
        ctx.results.failures.append(Failure(system.name, profile, round_, ctx.stage, message))
        _log(f"  FAILED at {ctx.stage}: {message}")
    finally:
        ctx.client.flushall()  # the next block starts from an empty Redis whatever this one left


def _wait_quiet(ctx: _Context) -> None:
    if ctx.options.wait_quiet > 0:
        ctx.results.quiet_waits.append(wait_until_quiet(ctx.options.max_other_load, ctx.options.wait_quiet))


def run(options: Options) -> Results:
    """Every measurement of ``options.systems``; every process started is stopped by PID before this returns."""
    systems = [SYSTEMS[name] for name in options.systems]
    results = Results(options, loadavg_before=_loadavg())
    if any(s.venv == "peers" for s in systems):
        venv.ensure()
        results.versions["peers venv"] = venv.installed(venv.bin_dir() / "python", venv.REPORTED)
    results.versions["relay venv"] = venv.installed(sys.executable, venv.RELAY_REPORTED)
    began, outside = time.monotonic(), _OutsideLoad()
    try:
        _rounds(options, systems, results)
    finally:
        (results.other_cores, results.other_cores_max), results.seconds = outside.stop(), time.monotonic() - began
    results.loadavg_after = _loadavg()
    return results


def _rounds(options: Options, systems: list[System], results: Results) -> None:
    """Round-robin: each round visits the systems in a rotated order, then the scaling drains."""
    with bench_scope() as bench:
        server = bench.redis()
        results.started_pids.append(server.pid)
        client = redis.Redis.from_url(server.url)
        bench.stack.callback(client.close)
        results.redis_version = str(cast(dict[str, Any], client.info("server"))["redis_version"])
        ctx = _Context(options, bench, server, client, results)
        for round_ in range(1, options.rounds + 1):
            shift = (round_ - 1) % len(systems)
            order = systems[shift:] + systems[:shift]
            for system in order:
                for profile in system.profiles:
                    if not measures(options, system, profile):
                        continue
                    _wait_quiet(ctx)
                    _log(f"round {round_}: {system.name} ({profile.name})")
                    _guarded(ctx, system, profile.name, round_, partial(run_block, ctx, system, profile, round_))
            for system in (s for s in order if s.scaling and DRAIN in options.workloads):
                for workers in options.scale_workers:
                    _wait_quiet(ctx)
                    _log(f"round {round_}: {system.name} with {workers} workers")
                    block = partial(run_scaling, ctx, system, workers, round_)
                    _guarded(ctx, system, f"{workers} workers", round_, block)


class _OutsideLoad:
    """Other processes' CPU over the whole run, in consecutive windows: one ``OtherLoad`` over the run
    would miss every process started after it began (another session's test suite, say)."""

    def __init__(self, window: float = 5.0) -> None:
        self.samples: list[float] = []
        self._window = window
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="outside-load", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            probe = OtherLoad()
            self._stop.wait(self._window)
            self.samples.append(probe.cores())

    def stop(self) -> tuple[float, float]:
        """Mean and maximum cores other processes used, over the windows."""
        self._stop.set()
        self._thread.join()
        return (statistics.fmean(self.samples), max(self.samples)) if self.samples else (0.0, 0.0)


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()
