"""The four measurements, each on a worker group and a client session someone else started and stops.

- ``idle``: Redis commands per second while a started worker waits for work.
- ``round_trip``: sequential submit -> result latencies from one client, at random arrival (a random pause
  before each request, so each meets an idle system) or back to back.
- ``load``: Redis commands per task while several clients submit and wait (counted by the client process).
- ``drain``: preload N jobs of one workload (no-op, or awaiting once) with the worker paused, resume it, time
  until every job is finished (probed in Redis, in enqueue order), then check every job's result with the
  system's own client.
- ``chain``: chains of N no-op steps (each takes the value before it and adds 1) awaited to their final value,
  one after another, then several at once; the same N steps as single submits chained by the client beside them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import redis

from bench.common import OtherLoad, cpu_seconds
from bench.peers import redisstats
from bench.peers.processes import ClientSession, WorkerGroup
from bench.peers.spec import NO_OP, TASKS, System, Variant

PROBE_INTERVAL = 0.005  # between probes of the drain's progress; each probe is one pipelined round trip
MAX_PROBE_BATCH = 512
RANDOM, BACK_TO_BACK = "random arrival", "back to back"


@dataclass
class Measurement:
    """What every measurement records: which system, round and profile, and the machine's other load."""

    system: str
    profile: str
    round: int
    other_cores: float = 0.0


@dataclass
class Idle(Measurement):
    seconds: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return redisstats.total(self.calls) / self.seconds


@dataclass
class RoundTrip(Measurement):
    variant: str = ""
    note: str = ""
    arrival: str = RANDOM
    ms: list[float] = field(default_factory=list)


@dataclass
class Load(Measurement):
    variant: str = ""
    tasks: int = 0
    clients: int = 0
    seconds: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def per_task(self) -> float:
        return redisstats.total(self.calls) / self.tasks


@dataclass
class Drain(Measurement):
    workload: str = NO_OP
    workers: int = 1
    jobs: int = 0
    seconds: float = 0.0
    verified: int = 0
    bad_sample: list[str] = field(default_factory=list)
    worker_cpu: float = 0.0
    redis_cpu: float = 0.0
    enqueue_calls: dict[str, int] = field(default_factory=dict)
    run_calls: dict[str, int] = field(default_factory=dict)
    early: int = 0  # jobs already finished when the clock started: must be 0 (the pause held)
    probes: int = 0  # the benchmark's own progress probes (subtracted from run_calls)

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.seconds


@dataclass
class Chain(Measurement):
    variant: str = ""  # a native chain's, or ``SINGLES``
    note: str = ""
    steps: int = 0
    ms: list[float] = field(default_factory=list)  # per chain, one after another
    calls: dict[str, int] = field(default_factory=dict)  # over those chains
    at_once: int = 0
    at_once_seconds: float = 0.0  # ``at_once`` chains started together, until the last ended

    @property
    def per_step(self) -> float:
        """Redis commands per step."""
        return redisstats.total(self.calls) / (self.steps * len(self.ms))

    @property
    def steps_per_second(self) -> float:
        """Throughput with ``at_once`` chains running together."""
        return self.at_once * self.steps / self.at_once_seconds if self.at_once_seconds else 0.0


def chain(
    system: System,
    profile: str,
    round_: int,
    session: ClientSession,
    variant: Variant,
    steps: int,
    n: int,
    at_once: int,
    timeout: float,
) -> Chain:
    """``n`` chains of ``steps`` steps one after another, then ``at_once`` of them together."""
    others = OtherLoad()
    out = session.call("chain", variant=variant.name, steps=steps, n=n, at_once=at_once, timeout=timeout)
    return Chain(
        system.name,
        profile,
        round_,
        others.cores(),
        variant.name,
        variant.note,
        steps,
        out["ms"],
        out["calls"],
        at_once,
        out["at_once_seconds"],
    )


def idle(system: System, profile: str, round_: int, client: redis.Redis, seconds: float, settle: float) -> Idle:
    """Commands/s of an idle worker over ``seconds``, after ``settle`` seconds for its start-up to pass."""
    time.sleep(settle)  # a measurement window, not synchronisation: start-up chatter is not idle cost
    others = OtherLoad()
    before, start = redisstats.snapshot(client), time.perf_counter()
    time.sleep(seconds)
    after, took = redisstats.snapshot(client), time.perf_counter() - start
    calls = redisstats.delta(before, after, redisstats.INFO_ONCE)
    return Idle(system.name, profile, round_, others.cores(), took, calls)


def round_trip(
    system: System, profile: str, round_: int, session: ClientSession, variant: Variant, n: int, max_pause: float
) -> RoundTrip:
    """``n`` round trips; with ``max_pause`` > 0 at random arrival (a uniform 0 to ``max_pause`` s pause before
    each), else back to back."""
    session.call("warm", variant=variant.name, n=1 if variant.short else 3)
    others = OtherLoad()
    ms = session.call("round_trip", variant=variant.name, n=n, max_pause=max_pause, timeout=60 + 2 * n)
    arrival = RANDOM if max_pause > 0 else BACK_TO_BACK
    return RoundTrip(system.name, profile, round_, others.cores(), variant.name, variant.note, arrival, ms)


def load(system: System, profile: str, round_: int, session: ClientSession, variant: str, n: int, clients: int) -> Load:
    others = OtherLoad()
    out = session.call("load", variant=variant, n=n, clients=clients, timeout=60 + 2 * n)
    return Load(system.name, profile, round_, others.cores(), variant, n, clients, out["seconds"], out["calls"])


def drain(
    system: System,
    profile: str,
    round_: int,
    group: WorkerGroup,
    session: ClientSession,
    client: redis.Redis,
    redis_pid: int,
    jobs: int,
    timeout: float,
    workload: str = NO_OP,
) -> Drain:
    """Preload ``jobs`` jobs of ``workload`` while ``group`` is paused, resume it and time until all are finished."""
    before = redisstats.snapshot(client)
    paused = group.pause()
    try:
        refs: list[str] = session.call("preload", n=jobs, task=TASKS[workload])
        enqueued = redisstats.snapshot(client)
        early, probes = count_finished(system, client, refs)
        others = OtherLoad()
        cpu, redis_cpu = group.cpu(), cpu_seconds(redis_pid)
        start = time.perf_counter()
    finally:
        group.resume(paused)  # the clock starts here (or the benchmark fails with the worker running again)
    probes += wait_finished(system, client, refs, timeout)
    seconds = time.perf_counter() - start
    cpu, redis_cpu = group.cpu() - cpu, cpu_seconds(redis_pid) - redis_cpu
    other_cores = others.cores()
    after = redisstats.snapshot(client)
    good, bad = session.call("verify", refs=refs)
    result = Drain(system.name, profile, round_, other_cores, workload, len(group.procs), len(refs), seconds, good, bad)
    result.worker_cpu, result.redis_cpu = cpu, redis_cpu
    result.early, result.probes = early, probes.total()
    result.enqueue_calls = redisstats.delta(before, enqueued, redisstats.INFO_ONCE)
    result.run_calls = redisstats.delta(enqueued, after, Counter(redisstats.INFO_ONCE) + probes)
    return result


def _probe(system: System, client: redis.Redis, refs: list[str], sent: Counter[str]) -> list[bool]:
    pipe = client.pipeline(transaction=False)
    for ref in refs:
        command = system.probe(ref)
        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        sent[command[0].lower()] += 1
    return [system.done(reply) for reply in pipe.execute()]


def count_finished(system: System, client: redis.Redis, refs: list[str]) -> tuple[int, Counter[str]]:
    """How many of ``refs`` are finished now, and the probe commands that cost."""
    sent: Counter[str] = Counter()
    finished = sum(sum(_probe(system, client, refs[i : i + 1000], sent)) for i in range(0, len(refs), 1000))
    return finished, sent


def wait_finished(system: System, client: redis.Redis, refs: list[str], timeout: float) -> Counter[str]:
    """Block until every job in ``refs`` is finished; returns the probe commands sent (to subtract them).

    A cursor walks ``refs`` in enqueue order: each probe checks a batch from the cursor and moves past the
    finished prefix, doubling the batch while whole batches are done, so the probes cost little more than
    one command per job rather than one per job per poll."""
    sent: Counter[str] = Counter()
    cursor, batch = 0, 1
    deadline = time.monotonic() + timeout
    while cursor < len(refs):
        chunk = refs[cursor : cursor + batch]
        done = _probe(system, client, chunk, sent)
        finished = next((n for n, ok in enumerate(done) if not ok), len(chunk))
        cursor += finished
        if finished == len(chunk):
            batch = min(2 * batch, MAX_PROBE_BATCH)
            continue
        batch = max(1, finished)  # about what finishes per interval; a fully finished batch doubles at once
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(refs) - cursor} of {len(refs)} {system.name} jobs unfinished after {timeout}s")
        time.sleep(PROBE_INTERVAL)
    return sent
