"""Relay on single Redis against a 3-primary Redis Cluster, in alternating rounds on one machine (issue #22).

Usage: .venv/bin/python -m bench.cluster [--rounds 3] [--jobs 10000] [--spread-jobs 5000] [--rt-requests 300]
                                         [--setup 'one queue S=1 x3' --setup 'one queue S=3 x3' ...]

One run starts a private single redis-server and a private six-node cluster (3 primaries, 3 replicas) and keeps
both for the whole run. Each round measures, in a rotated order so drift and outside load hit every set-up alike:

- ``single`` and ``cluster``: one deployment (one API, one worker at its default concurrency): a drain of
  ``--jobs`` no-op jobs (preloaded with the worker stopped by SIGSTOP, timed from SIGCONT until every job's
  event stream ends), then round trips over HTTP at random arrival (a uniform 0-20 ms pause before each) and
  back to back. Redis CPU per task during the drain: the single server's, or the CPU of the primary that holds
  the queue (every key of one queue is in one slot, so one primary).
- ``single x3`` and ``cluster x3``: three deployments (three ``RELAY_QUEUE_NAME``s, each its own API and
  worker), their queues placed on three different primaries on the cluster; ``--spread-jobs`` jobs each,
  drained at once. Each primary's CPU per task, and its share of the CPU and of the commands: the balance.
- ``one queue S=1 x3`` and ``one queue S=3 x3``: ONE queue served by the same three APIs and three workers as
  ``cluster x3`` (every process with the same ``RELAY_QUEUE_NAME``), with ``RELAY_QUEUE_SHARDS`` 1 and 3; the
  queue's name is chosen so its three shards' slots sit on three different primaries. ``--spread-jobs`` jobs
  through each API's ``Enqueuer`` (3x in all), drained at once; round trips through the first API. Each
  primary's share of the jobs (by ``shard_of``), of the keys (``DBSIZE`` after the preload), of the commands
  and of the CPU: the balance of one sharded queue.

Every process is stopped by PID; other processes' CPU is reported beside every measurement. A ceiling table
projects tasks/s per primary (1 core / CPU per task) and for N primaries: a projection, not a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from bench.common import Bench, OtherLoad, bench_scope, cpu_seconds, machine_facts, percentile, table
from bench.harness.processes import ManagedProcess, relay_env, start_api, start_worker, wait_until
from bench.harness.redis_servers import Cluster, Server, start_cluster, start_server
from bench.peers.processes import descendants
from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.redis import api_client
from shared.settings import Settings
from shared.tasks import TaskSubmission
from worker.tasks import load

TASK_MODULES = "worker.tasks.demo"
SUBMISSION = {"task": "echo", "kwargs": {"message": "hello"}}
NDJSON = {"Accept": "application/x-ndjson"}
MAX_QUEUE_DEPTH = "1000000"  # preloads beyond RELAY_MAX_QUEUE_DEPTH's 10,000 default
PRELOAD_BATCH = 200
PROBE_BATCH = 500
SINGLE, CLUSTER, SINGLE_X3, CLUSTER_X3 = "single", "cluster", "single x3", "cluster x3"
ONE_QUEUE_S1, ONE_QUEUE_S3 = "one queue S=1 x3", "one queue S=3 x3"  # one queue, three APIs and workers
SHARDS = 3
CLUSTER_HOME = "cluster, queue on the URL's node"  # where the API's and the worker's subscriptions sit
SETUPS = (SINGLE, CLUSTER, SINGLE_X3, CLUSTER_X3, CLUSTER_HOME, ONE_QUEUE_S1, ONE_QUEUE_S3)
SLOW_MS = 20.0
BALANCE_BAR = 0.15  # issue #22: each primary's share within +-15 % of an even share


@dataclass
class Options:
    rounds: int = 3
    jobs: int = 10_000
    spread_jobs: int = 5_000
    rt_requests: int = 300
    rt_max_pause: float = 0.020
    deployments: int = 3
    drain_timeout: float = 600.0
    setups: tuple[str, ...] = ()  # a subset of SETUPS to measure (empty: all)


@dataclass
class Node:
    """One Redis process that can hold queues: the single server, or a cluster primary (with its replica)."""

    name: str
    server: Server
    replica: Server | None = None


@dataclass
class Drain:
    setup: str
    round: int
    jobs: int
    seconds: float
    verified: int
    other_cores: float
    worker_cpu: float
    node_cpu: dict[str, float] = field(default_factory=dict)  # node -> CPU s during the drain
    node_commands: dict[str, int] = field(default_factory=dict)  # node -> commands processed during the drain
    node_jobs: dict[str, int] = field(default_factory=dict)  # node -> jobs of the queues (or shards) it holds
    node_keys: dict[str, int] = field(default_factory=dict)  # node -> DBSIZE once preloaded (measured placement)
    replica_cpu: float = 0.0
    late: bool = False  # a job had not ended when its schedule was empty (the clock ran on to the sweep)

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds


@dataclass
class RoundTrip:
    setup: str
    round: int
    arrival: str
    other_cores: float
    ms: list[float]


@dataclass
class Results:
    options: Options
    drains: list[Drain] = field(default_factory=list)
    round_trips: list[RoundTrip] = field(default_factory=list)
    placement: dict[str, str] = field(default_factory=dict)  # queue -> node
    shard_placement: dict[str, str] = field(default_factory=dict)  # shard tag -> node (the one-queue set-ups)
    sharded_queue: str = ""
    url_node: str = ""  # the node RELAY_REDIS_URL names (every subscription of the API and worker sits there)
    facts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Deployment:
    """One Relay deployment: a queue name, its API and its worker, on one kind of Redis."""

    queue: str
    url: str
    cluster: bool
    api: ManagedProcess
    base: str
    worker: ManagedProcess
    shards: int = 1


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- set-up ----------------------------------------------------------------------------------------------


def _primaries(cluster: Cluster) -> list[Node]:
    """The cluster's primaries (by ROLE, not start order), each with its replica (found by the replica's ROLE:
    a primary's own ROLE may not list a replica whose link is still being set up)."""
    roles: dict[int, list[object]] = {}
    for server in cluster.servers:
        with cluster.node_client(server) as client:
            roles[server.port] = list(client.execute_command("ROLE"))
    nodes = []
    for server in cluster.servers:
        if roles[server.port][0] in (b"master", "master"):
            replica = next(
                (
                    s
                    for s in cluster.servers
                    if roles[s.port][0] in (b"slave", "slave") and int(roles[s.port][2]) == server.port
                ),  # type: ignore[call-overload]
                None,
            )
            nodes.append(Node(f"primary-{len(nodes) + 1}", server, replica))
    return nodes


def _owner(cluster_client: RedisCluster, queue: str, nodes: list[Node]) -> Node:
    """The primary that holds ``queue``'s slot (its hash tag's)."""
    node = cluster_client.nodes_manager.get_node_from_slot(key_slot(keys.cluster_tag(queue).encode()))
    return next(n for n in nodes if n.server.port == int(node.port))


def _shard_owner(cluster_client: RedisCluster, queue: str, shard: int, shards: int, nodes: list[Node]) -> Node:
    """The primary that holds shard ``shard`` of ``shards`` of ``queue`` (its shard tag's slot)."""
    tag = keys.shard_tag(queue, shard, shards)
    node = cluster_client.nodes_manager.get_node_from_slot(key_slot(tag.encode()))
    return next(n for n in nodes if n.server.port == int(node.port))


def spread_shards(cluster_client: RedisCluster, nodes: list[Node], shards: int) -> tuple[str, list[Node]]:
    """A queue name whose ``shards`` shard tags sit on ``shards`` different primaries (``shard-0``, ``shard-1``
    ... tried in turn: crc16 can put two of one name's tags on one primary), with each shard's primary."""
    for n in range(1000):
        queue = f"shard-{n}"
        owners = [_shard_owner(cluster_client, queue, s, shards, nodes) for s in range(shards)]
        if len({o.server.port for o in owners}) == shards:
            return queue, owners
    raise RuntimeError(f"no queue name whose {shards} shards sit on {shards} primaries")


def spread_queues(cluster_client: RedisCluster, nodes: list[Node], count: int) -> list[tuple[str, Node]]:
    """``count`` queue names whose slots sit on ``count`` different primaries (``bench-0``, ``bench-1`` ... tried
    in turn; the first name found on each primary is kept)."""
    chosen: dict[int, tuple[str, Node]] = {}
    for n in range(1000):
        queue = f"bench-{n}"
        node = _owner(cluster_client, queue, nodes)
        chosen.setdefault(node.server.port, (queue, node))
        if len(chosen) == count:
            return list(chosen.values())
    raise RuntimeError(f"no {count} queue names on {count} primaries")


@contextlib.contextmanager
def deployments(
    bench: Bench, url: str, cluster: bool, queues: list[str], shards: int = 1
) -> Iterator[list[Deployment]]:
    """An API and a worker per queue (a name given twice: two of each on one queue), stopped by PID when the
    block ends."""
    with contextlib.ExitStack() as stack:
        out = []
        for queue in queues:
            env = relay_env(url, RELAY_QUEUE_NAME=queue, RELAY_MAX_QUEUE_DEPTH=MAX_QUEUE_DEPTH)
            env["RELAY_TASK_MODULES"] = TASK_MODULES
            if cluster:
                env["RELAY_REDIS_CLUSTER"] = "true"
                env["RELAY_QUEUE_SHARDS"] = str(shards)
            api, base = start_api(bench.log_dir, env)
            stack.callback(api.stop)
            worker = start_worker(bench.log_dir, env)
            stack.callback(worker.stop)
            out.append(Deployment(queue, url, cluster, api, base, worker, shards))
        yield out


# --- measurements ----------------------------------------------------------------------------------------


def _settings(deployment: Deployment) -> Settings:
    return Settings(
        redis_url=deployment.url,
        redis_cluster=deployment.cluster,
        queue_name=deployment.queue,
        queue_shards=deployment.shards,
        max_queue_depth=int(MAX_QUEUE_DEPTH),
        task_modules=TASK_MODULES,
    )


async def _preload(deployment: Deployment, n: int) -> list[str]:
    """``n`` echo tasks through ``Enqueuer`` (what the API calls), ``PRELOAD_BATCH`` at a time."""
    settings = _settings(deployment)
    spec = load([TASK_MODULES]).get("echo")
    pool = api_client(settings)
    enqueuer = Enqueuer(pool, settings)
    ids: list[str] = []
    try:
        for start in range(0, n, PRELOAD_BATCH):
            batch = [uuid.uuid4().hex for _ in range(start, min(n, start + PRELOAD_BATCH))]
            submissions = [TaskSubmission.model_validate(SUBMISSION | {"id": i}) for i in batch]
            await asyncio.gather(*(enqueuer.enqueue(prepare(spec, settings, s)) for s in submissions))
            ids += batch
    finally:
        await pool.aclose()
    return ids


def preload(deployment: Deployment, n: int) -> list[str]:
    with keys.layout(deployment.queue, deployment.cluster, deployment.shards):
        return asyncio.run(_preload(deployment, n))


def _ended(reply: object) -> bool:
    if not reply:
        return False
    fields = reply[0][1]  # type: ignore[index]
    lines = [ln for ln in fields[b"e"].splitlines() if ln.strip()]
    if not lines:
        return False
    event = json.loads(lines[-1])
    return bool(event["type"] == "end" and event["data"]["state"] == "succeeded")


def finished(client: redis.Redis | RedisCluster, deployment: Deployment, refs: list[str]) -> int:
    """How many of ``refs`` (in order) have ended, counted from the front until the first that has not."""
    streams = []
    with keys.layout(deployment.queue, deployment.cluster, deployment.shards):
        for ref in refs:
            with keys.on_task_shard(ref):
                streams.append(keys.events_stream(ref))
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xrevrange(stream, "+", "-", count=1)
    done = [_ended(r) for r in pipe.execute()]
    return next((n for n, ok in enumerate(done) if not ok), len(done))


def _tree(proc: ManagedProcess) -> list[int]:
    return [proc.pid, *descendants(proc.pid)]


def _signal(procs: list[ManagedProcess], sig: signal.Signals) -> None:
    for proc in procs:
        for pid in _tree(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _redis_cpu(server: Server) -> float:
    """The server's user + system CPU seconds from INFO cpu (getrusage: microseconds, where /proc counts 10 ms
    ticks)."""
    with server.client() as client:
        info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _keys(server: Server) -> int:
    with server.client() as client:
        return int(client.dbsize())


def _commands(server: Server) -> int:
    with server.client() as client:
        return int(client.info("stats")["total_commands_processed"])


def drain(
    setup: str,
    round_: int,
    deps: list[Deployment],
    owners: list[list[Node]],
    nodes: list[Node],
    client: redis.Redis | RedisCluster,
    jobs: int,
    timeout: float,
) -> Drain:
    """Preload ``jobs`` per deployment with every worker stopped, resume them all and time until every job ended.
    ``owners[i][s]`` holds shard ``s`` of ``deps[i]``'s queue (one shard: the queue); CPU and commands are read
    from every node in ``nodes``."""
    workers = [d.worker for d in deps]
    _signal(workers, signal.SIGSTOP)
    try:
        refs = [preload(d, jobs) for d in deps]
        node_keys = {n.name: _keys(n.server) for n in nodes}
        others = OtherLoad()
        cpu0 = {n.name: _redis_cpu(n.server) for n in nodes}
        cmd0 = {n.name: _commands(n.server) for n in nodes}
        rep0 = sum(_redis_cpu(n.replica) for n in nodes if n.replica)
        wcpu0 = sum(cpu_seconds(w.pid) for w in workers)
        start = time.perf_counter()
    finally:
        _signal(workers, signal.SIGCONT)
    # The clock stops when every queue's schedule is empty (its lane markers and running jobs gone: one ZCARD per
    # queue per 5 ms, so the probes cost Redis almost nothing); a sweep of every job's event stream then checks
    # that each ended. Should one not have (never seen), the clock runs on until the sweep finds all ended.
    schedules = set()
    for dep in deps:
        with keys.layout(dep.queue, dep.cluster, dep.shards):
            for shard in keys.shards():
                with keys.on_shard(shard):
                    schedules.add(keys.schedule(dep.queue))
    deadline = time.monotonic() + timeout
    while any(client.zcard(q) for q in schedules):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{setup}: drain unfinished after {timeout}s")
        time.sleep(0.005)
    seconds = time.perf_counter() - start
    cpu1 = {n.name: _redis_cpu(n.server) for n in nodes}
    cmd1 = {n.name: _commands(n.server) for n in nodes}
    rep1 = sum(_redis_cpu(n.replica) for n in nodes if n.replica)
    wcpu1 = sum(cpu_seconds(w.pid) for w in workers)
    other_cores = others.cores()
    cursors = [0] * len(deps)
    late = False
    while any(c < len(r) for c, r in zip(cursors, refs, strict=True)):
        for i, dep in enumerate(deps):
            while cursors[i] < len(refs[i]):
                done = finished(client, dep, refs[i][cursors[i] : cursors[i] + PROBE_BATCH])
                cursors[i] += done
                if done < PROBE_BATCH:
                    break
        if any(c < len(r) for c, r in zip(cursors, refs, strict=True)):
            late = True
            if time.monotonic() > deadline:
                raise TimeoutError(f"{setup}: {sum(map(len, refs)) - sum(cursors)} jobs never ended")
            time.sleep(0.005)
    if late:
        seconds = time.perf_counter() - start
    result = Drain(setup, round_, jobs * len(deps), seconds, 0, other_cores, 0.0)
    result.worker_cpu = wcpu1 - wcpu0
    result.node_cpu = {n.name: cpu1[n.name] - cpu0[n.name] for n in nodes}
    result.node_commands = {n.name: cmd1[n.name] - cmd0[n.name] for n in nodes}
    result.replica_cpu = rep1 - rep0
    result.late = late
    result.node_keys = node_keys
    result.node_jobs = {n.name: 0 for n in nodes}
    for dep, dep_owners, dep_refs in zip(deps, owners, refs, strict=True):
        for ref in dep_refs:
            result.node_jobs[dep_owners[keys.shard_of(ref, dep.shards)].name] += 1
    result.verified = sum(finished(client, d, r) for d, r in zip(deps, refs, strict=True))
    return result


def round_trips(setup: str, round_: int, dep: Deployment, n: int, max_pause: float) -> RoundTrip:
    """``n`` POST /tasks, each streamed to its ``end``; a uniform 0..``max_pause`` s pause before each (0: none)."""
    ms: list[float] = []
    with httpx.Client(base_url=dep.base, timeout=60) as http:
        for _ in range(3):
            _one(http)  # warm the connection and the API
        others = OtherLoad()
        for _ in range(n):
            if max_pause:
                time.sleep(random.uniform(0, max_pause))  # random arrival: not synchronisation
            start = time.perf_counter()
            _one(http)
            ms.append((time.perf_counter() - start) * 1000)
    arrival = "random arrival" if max_pause else "back to back"
    return RoundTrip(setup, round_, arrival, others.cores(), ms)


def _one(http: httpx.Client) -> None:
    with http.stream("POST", "/tasks", json=SUBMISSION, headers=NDJSON) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            event = json.loads(line) if line else {}
            if event.get("type") == "end":
                if event["data"]["state"] != "succeeded":
                    raise RuntimeError(f"task ended {line}")
                return
    raise RuntimeError("the stream closed before the end event")


# --- the run ---------------------------------------------------------------------------------------------


def run(options: Options) -> Results:
    results = Results(options, facts=machine_facts())
    began = time.monotonic()
    with bench_scope() as bench:
        single = start_server(bench.log_dir, name="single")
        bench.own(single.proc)
        cluster = start_cluster(bench.log_dir, primaries=3, replicas=1)
        bench.stack.callback(cluster.stop)
        nodes = _primaries(cluster)
        single_node = Node("single", single)
        cluster_client = RedisCluster.from_url(cluster.url)
        bench.stack.callback(cluster_client.close)
        single_client = single.client()
        bench.stack.callback(single_client.close)
        spread = spread_queues(cluster_client, nodes, options.deployments)
        results.placement = {q: f"{n.name} (port {n.server.port})" for q, n in spread}
        queues = [q for q, _ in spread]
        results.url_node = next(
            f"{n.name} (port {n.server.port})" for n in nodes if n.server.port == cluster.servers[0].port
        )
        url_port = cluster.servers[0].port
        home = next(q for q, n in spread if n.server.port == url_port)
        one = next(q for q, n in spread if n.server.port != url_port)
        sharded, shard_owners = spread_shards(cluster_client, nodes, SHARDS)
        results.sharded_queue = sharded
        results.shard_placement = {
            keys.shard_tag(sharded, s, SHARDS): f"{n.name} (port {n.server.port})" for s, n in enumerate(shard_owners)
        }
        unsharded = _owner(cluster_client, sharded, nodes)
        results.shard_placement[keys.cluster_tag(sharded) + " (S=1)"] = (
            f"{unsharded.name} (port {unsharded.server.port})"
        )
        setups = [s for s in SETUPS if not options.setups or s in options.setups]
        for round_ in range(1, options.rounds + 1):
            shift = (round_ - 1) % len(setups)
            for setup in setups[shift:] + setups[:shift]:
                _log(f"round {round_}: {setup}")
                on_cluster = setup in (CLUSTER, CLUSTER_X3, CLUSTER_HOME, ONE_QUEUE_S1, ONE_QUEUE_S3)
                url = cluster.url if on_cluster else single.url
                client: redis.Redis | RedisCluster = cluster_client if on_cluster else single_client
                shards = SHARDS if setup == ONE_QUEUE_S3 else 1
                if setup in (SINGLE_X3, CLUSTER_X3):
                    names = queues
                elif setup in (ONE_QUEUE_S1, ONE_QUEUE_S3):
                    names = [sharded] * options.deployments
                else:
                    names = [home if setup == CLUSTER_HOME else one]
                with deployments(bench, url, on_cluster, names, shards) as deps:
                    if setup == ONE_QUEUE_S3:
                        owners = [shard_owners] * len(names)
                    elif on_cluster:
                        owners = [[_owner(cluster_client, q, nodes)] for q in names]
                    else:
                        owners = [[single_node]] * len(names)
                    measured = nodes if on_cluster else [single_node]
                    jobs = options.spread_jobs if len(names) > 1 else options.jobs
                    d = drain(setup, round_, deps, owners, measured, client, jobs, options.drain_timeout)
                    results.drains.append(d)
                    _log(f"  drain {d.jobs} in {d.seconds:.2f}s, verified {d.verified}, others {d.other_cores:.2f}")
                    if len(names) == 1 or setup in (ONE_QUEUE_S1, ONE_QUEUE_S3):
                        for pause in (options.rt_max_pause, 0.0):
                            rt = round_trips(setup, round_, deps[0], options.rt_requests, pause)
                            results.round_trips.append(rt)
                            _log(f"  {rt.arrival} p50 {percentile(rt.ms, 50):.2f} ms")
                client.flushall()
                if on_cluster:
                    wait_until(cluster.ok, 30, "the cluster to stay ok")
    results.seconds = time.monotonic() - began
    return results


# --- the report ------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _owner_cpu_per_task(d: Drain) -> float:
    """CPU microseconds per task on the node(s) holding the queues (all jobs over the CPU of those nodes)."""
    holding = [n for n, jobs in d.node_jobs.items() if jobs]
    return 1e6 * sum(d.node_cpu[n] for n in holding) / d.jobs


def _idle_cpu_per_task(d: Drain) -> float:
    """CPU microseconds per task on the nodes holding none of the queues (cluster bus, broadcast pub/sub)."""
    return 1e6 * sum(cpu for n, cpu in d.node_cpu.items() if not d.node_jobs[n]) / d.jobs


def report(results: Results) -> str:
    o = results.options
    out = [f"## bench.cluster: single Redis vs a 3-primary Redis Cluster ({o.rounds} rounds)", ""]
    facts = results.facts
    out.append(f"Machine: {facts['nproc']} cores, {facts['cpu']}, Redis {facts['redis']}, Python {facts['python']}.")
    out.append(f"Queue placement on the cluster: {results.placement}; RELAY_REDIS_URL names {results.url_node}.")
    out.append(f"One queue's shards ({results.sharded_queue!r}): {results.shard_placement}.")
    out.append(f"Run took {results.seconds:.0f} s.")
    out.append("")
    by_setup: dict[str, list[Drain]] = {}
    for d in results.drains:
        by_setup.setdefault(d.setup, []).append(d)
    rows = []
    for d in results.drains:
        rows.append(
            [
                d.round,
                d.setup,
                d.jobs,
                d.verified,
                f"{d.per_second:.0f}",
                f"{_owner_cpu_per_task(d):.1f}",
                f"{_idle_cpu_per_task(d):.1f}" if len(d.node_cpu) > 1 else "-",
                f"{1e6 * d.replica_cpu / d.jobs:.1f}" if len(d.node_cpu) > 1 else "-",
                f"{1e6 * d.worker_cpu / d.jobs:.0f}",
                f"{sum(d.node_commands.values()) / d.jobs:.1f}",
                f"{d.other_cores:.2f}",
            ]
        )
    heads = ["round", "set-up", "jobs", "verified", "jobs/s", "Redis CPU us/task (queues' nodes)"]
    heads += ["other primaries' CPU us/task", "replicas' CPU us/task", "worker CPU us/task"]
    heads += ["Redis commands/task (primaries)"]
    out += ["### Drains, every round", "", table([*heads, "others (cores)"], rows), ""]
    late = [f"{d.setup} round {d.round}" for d in results.drains if d.late]
    out += [f"Drains whose clock ran on past an empty schedule: {', '.join(late) or 'none'}.", ""]
    # Side by side: per round ratios cluster/single.
    ratio_rows = []
    for label, a, b in ((" one deployment", SINGLE, CLUSTER), (" three deployments", SINGLE_X3, CLUSTER_X3)):
        pairs = list(zip(by_setup.get(a, []), by_setup.get(b, []), strict=False))
        if not pairs:
            continue
        ratios = [c.per_second / s.per_second for s, c in pairs]
        cpu = [_owner_cpu_per_task(c) / _owner_cpu_per_task(s) for s, c in pairs]
        ratio_rows.append(
            [
                label.strip(),
                f"{_median([s.per_second for s, _ in pairs]):.0f}",
                f"{_median([c.per_second for _, c in pairs]):.0f}",
                " ".join(f"{r:.2f}" for r in ratios) + f" (median {_median(ratios):.2f})",
                " ".join(f"{r:.2f}" for r in cpu) + f" (median {_median(cpu):.2f})",
            ]
        )
    heads = ["drain", "single jobs/s", "cluster jobs/s", "cluster/single per round", "Redis CPU/task cluster/single"]
    if ratio_rows:  # (not with --setup naming only some)
        out += ["### Drain, cluster against single (medians; ratios per round)", "", table(heads, ratio_rows), ""]
    out += _sharded_drain(by_setup)
    rt_rows = []
    for arrival in ("random arrival", "back to back"):
        for setup in (SINGLE, CLUSTER, CLUSTER_HOME, ONE_QUEUE_S1, ONE_QUEUE_S3):
            runs = [r for r in results.round_trips if r.setup == setup and r.arrival == arrival]
            if runs:
                p50 = [percentile(r.ms, 50) for r in runs]
                p99 = [percentile(r.ms, 99) for r in runs]
                rt_rows.append(
                    [
                        arrival,
                        setup,
                        " ".join(f"{v:.2f}" for v in p50),
                        f"{_median(p50):.2f}",
                        " ".join(f"{v:.2f}" for v in p99),
                        f"{_median(p99):.2f}",
                        " ".join(str(sum(v > SLOW_MS for v in r.ms)) for r in runs),
                        " ".join(f"{r.other_cores:.2f}" for r in runs),
                    ]
                )
    heads = ["arrival", "set-up", "p50 per round (ms)", "p50 median", "p99 per round", "p99 median"]
    heads += [f"over {SLOW_MS:.0f} ms per round", "others"]
    out += [f"### Round trip over HTTP ({o.rt_requests} per round)", "", table(heads, rt_rows), ""]
    out += _balance(by_setup.get(CLUSTER_X3, []), by_setup.get(SINGLE_X3, []))
    out += _shard_balance(by_setup.get(ONE_QUEUE_S3, []) + by_setup.get(ONE_QUEUE_S1, []))
    out += _ceiling(by_setup)
    return "\n".join(out)


def _balance(spread: list[Drain], single: list[Drain]) -> list[str]:
    if not spread:
        return []
    rows, worst = [], 0.0
    for d in spread:
        cpu_total = sum(d.node_cpu.values())
        cmd_total = sum(d.node_commands.values())
        cpu_shares = {n: d.node_cpu[n] / cpu_total for n in d.node_cpu}
        cmd_shares = {n: d.node_commands[n] / cmd_total for n in d.node_commands}
        even = 1 / len(d.node_cpu)
        dev = max(abs(s - even) / even for s in [*cpu_shares.values(), *cmd_shares.values()])
        worst = max(worst, dev)
        per_task = [f"{n} {1e6 * d.node_cpu[n] / d.node_jobs[n]:.1f}" for n in d.node_cpu if d.node_jobs[n]]
        rows.append(
            [
                d.round,
                " / ".join(f"{100 * cpu_shares[n]:.1f}" for n in sorted(cpu_shares)),
                " / ".join(f"{100 * cmd_shares[n]:.1f}" for n in sorted(cmd_shares)),
                ", ".join(per_task),
                f"{100 * dev:.1f}",
                f"{1e6 * d.replica_cpu / d.jobs:.1f}",
                f"{d.other_cores:.2f}",
            ]
        )
    heads = ["round", "CPU share % (p1/p2/p3)", "commands share %", "Redis CPU us/task per primary"]
    heads += ["worst deviation from even %", "replicas' CPU us/task", "others"]
    verdict = "met" if worst <= BALANCE_BAR else "not met"
    out = ["### Balance: three deployments, one queue per primary", "", table(heads, rows), ""]
    out.append(
        f"Balance bar (every primary within +-{100 * BALANCE_BAR:.0f} % of an even share, CPU and commands, "
        f"every round): {verdict} (worst {100 * worst:.1f} %). This is the balance of three deployments whose "
        "queues sit on three different primaries; one queue is one slot, so one deployment alone loads one primary "
        "and leaves the others idle (the drains of one deployment above)."
    )
    if single:
        per_task = [1e6 * d.node_cpu["single"] / d.jobs for d in single]
        out.append(
            "The same three deployments on single Redis: "
            + ", ".join(f"{v:.1f}" for v in per_task)
            + " us of Redis CPU per task (one process carries all three queues)."
        )
    return [*out, ""]


def _sharded_drain(by_setup: dict[str, list[Drain]]) -> list[str]:
    """One queue on three APIs and workers: RELAY_QUEUE_SHARDS=3 against 1, round by round (and three queues)."""
    pairs = list(zip(by_setup.get(ONE_QUEUE_S1, []), by_setup.get(ONE_QUEUE_S3, []), strict=False))
    if not pairs:
        return []
    ratios = [b.per_second / a.per_second for a, b in pairs]
    cpu = [_owner_cpu_per_task(b) / _owner_cpu_per_task(a) for a, b in pairs]
    x3 = by_setup.get(CLUSTER_X3, [])
    row = [
        f"{_median([a.per_second for a, _ in pairs]):.0f}",
        f"{_median([b.per_second for _, b in pairs]):.0f}",
        " ".join(f"{r:.2f}" for r in ratios) + f" (median {_median(ratios):.2f})",
        " ".join(f"{r:.2f}" for r in cpu) + f" (median {_median(cpu):.2f})",
        f"{_median([d.per_second for d in x3]):.0f}" if x3 else "-",
    ]
    heads = ["S=1 jobs/s", "S=3 jobs/s", "S=3/S=1 per round", "Redis CPU/task (all primaries) S=3/S=1"]
    heads += ["three queues (cluster x3) jobs/s"]
    return [
        "### Drain, one queue on the cluster: RELAY_QUEUE_SHARDS=3 against 1 (3 APIs, 3 workers; medians)",
        "",
        table(heads, [row]),
        "",
    ]


def _shard_balance(drains: list[Drain]) -> list[str]:
    """Each primary's share of one queue's jobs, keys, commands and CPU, S=3 (and S=1 beside it)."""
    if not drains:
        return []
    rows, worst = [], 0.0
    for d in drains:
        names = sorted(d.node_cpu)
        shares = {
            "jobs": {n: d.node_jobs[n] / d.jobs for n in names},
            "keys": {n: d.node_keys[n] / max(1, sum(d.node_keys.values())) for n in names},
            "commands": {n: d.node_commands[n] / sum(d.node_commands.values()) for n in names},
            "CPU": {n: d.node_cpu[n] / sum(d.node_cpu.values()) for n in names},
        }
        even = 1 / len(names)
        dev = max(abs(v - even) / even for kind in shares.values() for v in kind.values())
        if d.setup == ONE_QUEUE_S3:
            worst = max(worst, dev)
        per_task = [f"{1e6 * d.node_cpu[n] / d.node_jobs[n]:.1f}" if d.node_jobs[n] else "-" for n in names]
        rows.append(
            [
                d.setup,
                d.round,
                *(" / ".join(f"{100 * kind[n]:.1f}" for n in names) for kind in shares.values()),
                " / ".join(per_task),
                f"{100 * dev:.1f}",
                f"{d.other_cores:.2f}",
            ]
        )
    heads = ["set-up", "round", "jobs % (p1/p2/p3)", "keys %", "commands %", "CPU %"]
    heads += ["Redis CPU us/task per primary", "worst deviation from even %", "others"]
    verdict = "met" if worst <= BALANCE_BAR else "not met"
    return [
        "### Balance: one queue, RELAY_QUEUE_SHARDS=3 (S=1 beside it)",
        "",
        table(heads, rows),
        "",
        f"Balance bar for S=3 (every primary within +-{100 * BALANCE_BAR:.0f} % of an even share of jobs, keys, "
        f"commands and CPU, every round): {verdict} (worst {100 * worst:.1f} %). Jobs by ``shard_of`` of each id; "
        "keys are each primary's DBSIZE once preloaded; presence, the catalogue and the maintenance lock stay in "
        "shard 0's slot.",
        "",
    ]


def _ceiling(by_setup: dict[str, list[Drain]]) -> list[str]:
    rows = []
    for setup in (SINGLE, CLUSTER, CLUSTER_HOME, SINGLE_X3, CLUSTER_X3, ONE_QUEUE_S1, ONE_QUEUE_S3):
        drains = by_setup.get(setup, [])
        if not drains:
            continue
        if setup in (CLUSTER_X3, ONE_QUEUE_S3):
            per_task = _median(
                [1e6 * d.node_cpu[n] / d.node_jobs[n] for d in drains for n in d.node_jobs if d.node_jobs[n]]
            )
        else:
            per_task = _median([_owner_cpu_per_task(d) for d in drains])
        one = 1e6 / per_task
        primaries = (1, 3, 6, 12) if setup.startswith(("cluster", "one queue")) else (1,)
        rows.append([setup, f"{per_task:.1f}", *(f"{n * one:,.0f}" for n in primaries)])
    rows = [r + [""] * (6 - len(r)) for r in rows]
    heads = ["measured on", "Redis CPU us/task (median)", "1 primary (tasks/s)", "3 primaries", "6", "12"]
    return [
        "### Ceiling: tasks/s a primary carries at 1 core, by its CPU per task (a projection)",
        "",
        table(heads, rows),
        "",
        "1 primary = 1 core / its CPU per task in the drain; N primaries = N x that, which holds only with at least "
        "N deployments (queues) spread one per primary, or one queue in at least N shards spread over them "
        "(RELAY_QUEUE_SHARDS), and cores (and clients, workers, network) to spare: this "
        "2-core machine cannot host that load, so the N > 1 columns are projections, not measurements.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    parser.add_argument("--rounds", type=int, default=d.rounds)
    parser.add_argument("--jobs", type=int, default=d.jobs, help="no-op jobs per drain of one deployment")
    parser.add_argument("--spread-jobs", type=int, default=d.spread_jobs, help="jobs per deployment, three at once")
    parser.add_argument("--rt-requests", type=int, default=d.rt_requests, help="round trips per arrival per round")
    parser.add_argument(
        "--setup", action="append", choices=SETUPS, default=[], help="only this set-up (repeatable; default: all)"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args()
    options = Options(args.rounds, args.jobs, args.spread_jobs, args.rt_requests, setups=tuple(args.setup))
    text = report(run(options))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
