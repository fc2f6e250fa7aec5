"""A Redis Cluster primary SIGKILLed under steady load (issue #22), with real processes: a cluster of its own
(three primaries, three replicas), two APIs with open streams, two workers and steady submits.

``RELAY_REDIS_URL`` names the primary that holds the deployment's slot, so one kill takes both the node that
holds every key of the deployment and the node every process subscribed on (for live events, wake-up notices
and aborts): the replica is promoted and the clients must follow it, and the subscriptions must move to a node
that is up (``shared.redis.RelayCluster.pubsub``).

Measured (printed with ``-s``) and asserted: submits answer 202 or 503 with Retry-After (never a 500, never a
hung request) and 202 again after the promotion; workers ride it out (none restarted, both work afterwards);
every stream resumes, ends, and is told by a ``gap`` event of whatever it never got; the streamed tasks run
once; after the failover every process subscribes again on a surviving node, wake-ups start idle workers at
once (the poll delay is long) and new streams get live events. Without ``RELAY_REDIS_WAIT_REPLICAS`` a submit the
primary acknowledged just before it died may not have reached its replica: such tasks are counted
(``accepted_lost``), not asserted away. The case ``replica-lagging`` makes that window wide on purpose (the replica
stopped and its link cut just before the kill) and asserts that every submit sent after the cut, acknowledged, is
lost. The case ``replica-lagging-wait-1`` is the same with ``RELAY_REDIS_WAIT_REPLICAS=1``: the submits sent while
the replica lags are refused (503 ``not_replicated``), none accepted is lost. There the killed node is started again
after the promotion (as an orchestrator would): it rejoins as the new primary's replica, without which a primary
with no replica can confirm nothing and every submit is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.crc import key_slot

from bench.harness.client import read_events, submit_ok, types
from bench.harness.processes import ManagedProcess, wait_until
from bench.harness.redis_servers import Cluster, Server, start_cluster
from shared import keys
from tests.conftest import StartApi, StartWorker
from tests.support.failover import (
    assert_every_stream_honest_and_each_task_ran_once,
    assert_the_load_rode_it_out,
    failed_errors,
    follow_and_load,
    outcome,
    ran_any,
    settle,
    subscribers,
)
from tests.support.heavy import heavy

# cluster-node-timeout: how long a primary may not answer before its replica takes over. 2 s, not 1: as for the
# Sentinel test's down-after-milliseconds, a busy 2-core machine (this suite loads it) can keep a healthy node
# from answering for a second, and a failover nobody caused would muddle the count; 2 s keeps the outage short
# enough for the test to stay under a minute.
NODE_TIMEOUT_MS = 2000
POLL_DELAY_SECONDS = 30  # idle workers hear of new work by wake-up notices only, within the test's time


def cluster_nodes(server: Server) -> list[list[str]]:
    """``CLUSTER NODES`` as one list of fields per node, asked of ``server``."""
    argv = ["redis-cli", "-p", str(server.port), "cluster", "nodes"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def owner_and_replica(cluster: Cluster, slot: int) -> tuple[Server, Server] | None:
    """The primary that holds ``slot`` and its replica, once the node asked knows both (replicas are announced by
    gossip, shortly after ``--cluster create``)."""
    by_port = {s.port: s for s in cluster.servers}
    nodes = cluster_nodes(cluster.servers[0])
    port_of = {fields[0]: int(fields[1].split("@")[0].rsplit(":", 1)[1]) for fields in nodes}
    for fields in nodes:
        ranges = [r for r in fields[8:] if not r.startswith("[")]
        spans = [(int(r.split("-")[0]), int(r.split("-")[-1])) for r in ranges]
        if "master" in fields[2] and any(lo <= slot <= hi for lo, hi in spans):
            replica = next((f for f in nodes if f[3] == fields[0]), None)
            return None if replica is None else (by_port[port_of[fields[0]]], by_port[port_of[replica[0]]])
    return None


def replication(server: Server) -> dict[str, object]:
    client = server.client()
    try:
        return dict(client.info("replication"))
    finally:
        client.close()


def restart(server: Server, log_dir: Path) -> Server:
    """``server`` started again, same port and cluster files (its ``nodes.conf`` names the cluster it rejoins)."""
    argv = cast(list[str], server.proc.proc.args)
    return Server(ManagedProcess("cluster", argv, dict(os.environ), log_dir), server.port)


def replicating(server: Server) -> bool:
    """``server`` is up and in sync with a primary."""
    try:
        return replication(server).get("master_link_status") == "up"
    except (redis.RedisError, OSError):
        return False


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own: killing a node of the session's cluster would break the other tests."""
    started = start_cluster(tmp_path, node_timeout_ms=NODE_TIMEOUT_MS)
    try:
        yield started
    finally:
        started.stop()


@heavy
@pytest.mark.cluster
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("lagging", "wait_replicas"),
    [(False, 0), (True, 0), (True, 1)],
    ids=["replica-in-sync", "replica-lagging", "replica-lagging-wait-1"],
)
def test_cluster_primary_sigkill_under_load(
    cluster: Cluster, spawn_api: StartApi, spawn_worker: StartWorker, lagging: bool, wait_replicas: int, tmp_path: Path
) -> None:
    namespace = f"relay:cf:{uuid.uuid4().hex[:8]}"
    slot = key_slot(keys.cluster_tag(namespace).encode())
    wait_until(lambda: owner_and_replica(cluster, slot) is not None, 30, "the slot's primary and its replica")
    primary, replica = owner_and_replica(cluster, slot) or (cluster.servers[0], cluster.servers[0])
    # A replica that has not finished its first sync may not take over (cluster-replica-validity-factor).
    wait_until(lambda: replication(replica).get("master_link_status") == "up", 30, "the replica to be in sync")
    env = {
        "RELAY_REDIS_CLUSTER": "true",
        "RELAY_QUEUE_NAME": namespace,
        "RELAY_REDIS_TIMEOUT_SECONDS": "1",
        "RELAY_HEARTBEAT_SECONDS": "1",
        "RELAY_POLL_DELAY_SECONDS": str(POLL_DELAY_SECONDS),
        # Longer than the outage (node timeout, election, the clients re-reading the layout) plus a third of a lease
        # since the last renewal, so no worker takes over a job whose worker is alive.
        "RELAY_LEASE_SECONDS": "10",
        "RELAY_REDIS_WAIT_REPLICAS": str(wait_replicas),
        # Below RELAY_REDIS_TIMEOUT_SECONDS, and short: the lagging replica stays stopped while 4 submits per load
        # time out, well under the node timeout.
        "RELAY_REDIS_WAIT_TIMEOUT_MS": "200",
    }
    bases = [spawn_api(url=primary.url, offers=False, **env)[1] for _ in range(2)]
    workers = [spawn_worker(url=primary.url, **env) for _ in range(2)]
    streamed, followers, loads = follow_and_load(bases)
    try:
        for load in loads:
            load.wait_for(lambda s: len(s.accepted) >= 20, 30, "submits before the kill")
        wait_until(lambda: all(f.seqs for f in followers), 20, "every stream to have events")
        # Both workers' wake-up listeners (and the APIs' hubs, for the open streams) are on the URL's node.
        subscribed_before = subscribers(primary)
        assert subscribed_before >= len(workers)
        cut_at = 0.0
        if lagging:
            # The worst moment to lose a primary: its replica lags behind, so what the primary acknowledged last
            # exists nowhere else. Here the replica is stopped (for well under the node timeout, so nobody fails it)
            # and its link cut by the primary: stopping it alone would not do, loopback's socket buffers would hold
            # the primary's writes until it runs again.
            answered = [load.answered for load in loads]
            replica.proc.send(signal.SIGSTOP)
            try:
                with primary.client() as admin:
                    assert admin.client_kill_filter(_type="slave") == 1
                cut_at = time.monotonic()
                for load, before in zip(loads, answered, strict=True):
                    load.wait_for(lambda s, n=before: s.answered >= n + 4, 30, "submits while the replica lags")
            finally:
                killed_at = time.monotonic()
                primary.proc.send(signal.SIGKILL)
                replica.proc.send(signal.SIGCONT)
        else:
            killed_at = time.monotonic()
            primary.proc.send(signal.SIGKILL)
        wait_until(lambda: replication(replica)["role"] == "master", 30, "the replica to be promoted")
        promoted_after = time.monotonic() - killed_at
        rejoined_after = None
        if wait_replicas:
            again = restart(primary, tmp_path)
            cluster.servers[cluster.servers.index(primary)] = again  # the fixture stops it
            wait_until(lambda: replicating(again), 60, "the killed node to rejoin as a replica")
            rejoined_after = round(time.monotonic() - killed_at, 2)
        for load in loads:
            load.wait_for(lambda s: sum(t > killed_at for t in s.accepted_at) >= 20, 60, "submits after the failover")
    finally:
        for load in loads:
            load.__exit__(None, None, None)
    recovery = [min(t for t in load.accepted_at if t > killed_at) - killed_at for load in loads]
    survivors = [s for s in cluster.servers if s is not primary]  # the killed node started again is up too
    # Every worker's wake-up listener is subscribed again, on a node that is up.
    wait_until(lambda: sum(subscribers(s) for s in survivors) >= len(workers), 30, "the subscriptions to move")
    for follower in followers:
        follower.join(90)

    accepted = [task_id for load in loads for task_id in load.accepted]
    unreplicated = [
        task_id
        for load in loads
        for task_id, sent_at in zip(load.accepted, load.accepted_sent_at, strict=True)
        if lagging and cut_at < sent_at < killed_at  # sent after the replica's link was cut: it never saw them
    ]
    states, lost = settle(bases, accepted)
    # Idle workers (the load is over) hear of a new task by its wake-up notice, not by a poll POLL_DELAY_SECONDS
    # away: each probe, one after the other, must finish well before the poll could have found it.
    probe_seconds = []
    for _ in range(3):
        started = time.monotonic()
        probe = submit_ok(bases[0], {"task": "sleep", "kwargs": {"seconds": 0.1, "steps": 1}})
        settle(bases, [probe], timeout=POLL_DELAY_SECONDS / 3)
        probe_seconds.append(round(time.monotonic() - started, 2))
    # More 1 s tasks at once than one worker's 10 slots: both workers must still work.
    probes = [submit_ok(bases[i % 2], {"task": "sleep", "kwargs": {"seconds": 1, "steps": 1}}) for i in range(30)]
    settle(bases, probes)
    # A stream opened after the failover gets its live events on either API (each hub subscribed again).
    fresh = submit_ok(bases[0], {"task": "count", "kwargs": {"n": 10, "interval": 0.2}})
    fresh_streams = [types(read_events(base, fresh)) for base in bases]

    report = {
        "replica_lagging": lagging,
        "replicas_waited_for": wait_replicas,
        "seconds_until_the_killed_node_replicates_again": rejoined_after,
        "accepted_while_the_replica_lagged": len(unreplicated),
        "node_timeout_ms": NODE_TIMEOUT_MS,
        "seconds_until_replica_promoted": round(promoted_after, 2),
        "seconds_until_submits_succeed_again": [round(r, 2) for r in recovery],
        "subscribers_on_the_killed_node": subscribed_before,
        "wakeup_probe_seconds": probe_seconds,
    } | outcome(loads, accepted, lost, followers, workers)
    print("\nCLUSTER FAILOVER " + json.dumps(report, sort_keys=True))
    failed = failed_errors(bases[0], states)

    assert_the_load_rode_it_out(loads)
    assert report["workers_restarted"] == 0
    assert all(ran_any(worker, probes) for worker in workers)  # both workers kept working
    assert all(kinds[-1] == "end" and kinds.count("partial") == 10 for kinds in fresh_streams), fresh_streams
    assert_every_stream_honest_and_each_task_ran_once(bases[0], followers, streamed)
    assert failed == {}, failed
    # Every accepted task either ran to its end or is gone with the primary's last unreplicated writes (counted in
    # the report; asynchronous replication without WAIT): none is stuck half-way.
    assert set(states.values()) <= {"succeeded", "lost"}
    if wait_replicas:
        assert lost == []  # a 202 meant the replica had it, and that replica is the one promoted
        assert unreplicated == []  # nothing was acknowledged while the replica lagged ...
        assert report["codes_503"]["not_replicated"] > 0  # ... it was refused: the lag was met
    elif lagging:
        assert unreplicated != []
        assert set(unreplicated) <= set(lost)  # acknowledged by the primary alone, then lost with it: what WAIT is for
    else:
        assert len(lost) <= len(accepted) // 10, lost  # a loss window of a few ms, not the outage's submits
