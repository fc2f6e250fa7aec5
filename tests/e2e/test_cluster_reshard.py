"""A live reshard under steady load (issue #22): ``redis-cli --cluster reshard`` moves the slot that holds a queue
(and seven others) from its primary to another one while tasks are submitted, run and streamed, with real
processes on a cluster of the test's own (three primaries, no replicas: a reshard needs none).

While a slot migrates its keys move a batch at a time (``MIGRATE``, ``--cluster-pipeline`` keys each), so for a
while some of the queue's keys are on the old primary and some on the new one. Relay's scripts build most key
names themselves (``shared.scripts``), so each call also declares a key that never exists
(``keys.migration_guard``): the cluster then refuses the script with ``TRYAGAIN`` until the slot has settled on one
node, and the clients send it again (``shared.redis``), instead of letting it run on a node that lacks some of its
keys.

Measured (printed with ``-s``) and asserted: submits answer 202 or 503 with Retry-After (never a 500, never a hung
request); every accepted task runs exactly once (its worker's end line, counted in both workers' logs) and none is
lost; every stream open across the move ends, honest (a ``gap`` would announce what it missed); the workers are
not restarted; the reshard itself succeeds. The subscriptions stay on the old primary (nothing moves them), where
the cluster bus still brings them the moved slot's ``PUBLISH``: afterwards idle workers start a new task at once
(wake-up notices; the poll delay is long) and a new stream gets its live events.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from bench.harness.client import read_events, submit_ok, types
from bench.harness.processes import wait_until
from bench.harness.redis_servers import Cluster, Server, start_cluster
from shared import keys
from tests.conftest import StartApi, StartWorker
from tests.support.failover import (
    assert_every_stream_honest_and_each_task_ran_once,
    assert_the_load_rode_it_out,
    failed_errors,
    follow_and_load,
    outcome,
    settle,
    subscribers,
)
from tests.support.heavy import heavy

SLOTS_MOVED = 8  # redis-cli moves the lowest slots of the source: the queue's (below SLOTS_MOVED) and its neighbours
# Keys of a long-lived queue (results, event logs, indexes) that the reshard moves with the live ones: at redis-cli's
# 10 keys per MIGRATE they keep the slot half moved for about a second, where a young queue's few hundred keys move
# in a few ms and the load rarely meets the half-moved slot at all.
HISTORY_KEYS = 20_000
POLL_DELAY_SECONDS = 30


def namespace_in_a_low_slot() -> str:
    """A namespace whose hash tag lies in one of the ``SLOTS_MOVED`` lowest slots (the first primary's), so
    ``--cluster-slots SLOTS_MOVED`` from that primary moves it."""
    while True:
        namespace = f"relay:rs:{uuid.uuid4().hex[:8]}"
        if key_slot(keys.cluster_tag(namespace).encode()) < SLOTS_MOVED:
            return namespace


def node_id(server: Server) -> str:
    with server.client() as client:
        return str(client.execute_command("CLUSTER", "MYID").decode())


def owner(cluster: Cluster, slot: int) -> int:
    """The port of the primary that holds ``slot``, as every node agrees (-1 until they do)."""
    owners = set()
    for server in cluster.servers:
        with server.client() as client:
            for lo, hi, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if lo <= slot <= hi:
                    owners.add(int(primary[1]))
    return owners.pop() if len(owners) == 1 else -1


def keys_in_slot(server: Server, slot: int) -> int:
    with server.client() as client:
        return int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def reshard(cluster: Cluster, source: Server, target: Server) -> subprocess.CompletedProcess[str]:
    """``redis-cli --cluster reshard`` of the ``SLOTS_MOVED`` lowest slots of ``source`` to ``target``, with
    redis-cli's default pipeline (10 keys per ``MIGRATE``): the queue's slot is half moved for a while."""
    argv = ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source.port}", "--cluster-from", node_id(source)]
    argv += ["--cluster-to", node_id(target), "--cluster-slots", str(SLOTS_MOVED), "--cluster-yes"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def add_history(server: Server, namespace: str) -> None:
    """``HISTORY_KEYS`` inert keys in the namespace's slot (under a prefix Relay never reads)."""
    with server.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(HISTORY_KEYS):
            pipe.set(f"{keys.cluster_tag(namespace)}history:{i}", "x" * 100)
        pipe.execute()


def runs(workers: list, task_ids: list[str]) -> Counter[str]:  # type: ignore[type-arg]
    """How often each task ended a run, by its worker's end line ("task <id> <name> try=N <state> in ...")."""
    wanted = set(task_ids)
    ended: Counter[str] = Counter()
    for worker in workers:
        for match in re.finditer(r"task (\S+) \S+ try=\d+ \S+ in ", worker.output()):
            if match.group(1) in wanted:
                ended[match.group(1)] += 1
    return ended


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own (moving slots of the session's would disturb the other tests); no replicas:
    a reshard moves slots between primaries only."""
    started = start_cluster(tmp_path, primaries=3, replicas=0)
    try:
        yield started
    finally:
        started.stop()


@heavy
@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_a_live_reshard_moves_the_queues_slot_under_load(
    cluster: Cluster, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    namespace = namespace_in_a_low_slot()
    slot = key_slot(keys.cluster_tag(namespace).encode())
    source, target = cluster.servers[0], cluster.servers[1]  # --cluster create gives the first node slots 0-5460
    assert owner(cluster, slot) == source.port
    add_history(source, namespace)
    env = {
        "RELAY_REDIS_CLUSTER": "true",
        "RELAY_QUEUE_NAME": namespace,
        # Idle workers hear of new work by wake-up notices only, within the test's time: the probes after the move
        # show that the sharded subscriptions followed the slot to its new owner. Defaults otherwise.
        "RELAY_POLL_DELAY_SECONDS": str(POLL_DELAY_SECONDS),
    }
    bases = [spawn_api(url=cluster.url, offers=False, **env)[1] for _ in range(2)]
    workers = [spawn_worker(url=cluster.url, **env) for _ in range(2)]
    streamed, followers, loads = follow_and_load(bases, resubmit=True)
    try:
        for load in loads:
            load.wait_for(lambda s: len(s.accepted) >= 30, 30, "submits before the reshard")
        wait_until(lambda: all(f.seqs for f in followers), 20, "every stream to have events")
        keys_moved = keys_in_slot(source, slot)
        moved_at = time.monotonic()
        done = reshard(cluster, source, target)
        reshard_seconds = time.monotonic() - moved_at
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        wait_until(lambda: owner(cluster, slot) == target.port, 10, "every node to know the slot's new primary")
        for load in loads:
            load.wait_for(
                lambda s: sum(t > moved_at + reshard_seconds for t in s.accepted_at) >= 20, 30, "submits after"
            )
    finally:
        for load in loads:
            load.__exit__(None, None, None)
    for follower in followers:
        follower.join(60)

    accepted = [task_id for load in loads for task_id in load.accepted]
    states, lost = settle(bases, accepted)
    # A submit refused with a 503 and never sent again (the load stopped first) left nothing behind.
    abandoned = [t for load in loads for t in set(load.refused) - set(load.accepted)]
    left_behind = [t for t in abandoned if httpx.get(f"{bases[0]}/tasks/{t}", timeout=10).status_code != 404]
    ended = runs(workers, accepted)
    # The slot is on the new primary, every subscription still on the old one: idle workers start a new task at
    # once (by its wake-up notice, not by a poll POLL_DELAY_SECONDS away), and a new stream gets its live events.
    probe_seconds = []
    for _ in range(3):
        started = time.monotonic()
        probe = submit_ok(bases[0], {"task": "sleep", "kwargs": {"seconds": 0.1, "steps": 1}})
        settle(bases, [probe], timeout=POLL_DELAY_SECONDS / 3)
        probe_seconds.append(round(time.monotonic() - started, 2))
    fresh = submit_ok(bases[0], {"task": "count", "kwargs": {"n": 10, "interval": 0.2}})
    fresh_streams = [types(read_events(base, fresh)) for base in bases]
    report = {
        "slot": slot,
        "slots_moved": SLOTS_MOVED,
        "keys_in_the_queues_slot": keys_moved,
        "reshard_seconds": round(reshard_seconds, 2),
        "tasks_run_once": sum(n == 1 for n in ended.values()),
        "tasks_run_more_than_once": sum(n > 1 for n in ended.values()),
        "streams_ended": sum(f.ended for f in followers),
        "keys_left_on_the_old_primary": keys_in_slot(source, slot),
        "subscribers_on_the_old_and_new_primary": [subscribers(source), subscribers(target)],
        "wakeup_probe_seconds": probe_seconds,
        "submits_refused_then_resubmitted": sum(len(set(load.refused) & set(load.accepted)) for load in loads),
    } | outcome(loads, accepted, lost, followers, workers)
    print("\nCLUSTER RESHARD " + json.dumps(report, sort_keys=True))

    assert_the_load_rode_it_out(loads)
    # Refused only while the slot moved, before any script ran: not an error half-way through one ("Script attempted
    # to access a non local key", redis_error), after which a resubmit would meet whatever it had written.
    assert set(report["codes_503"]) <= {"redis_slot_moving"}, report["codes_503"]
    assert report["workers_restarted"] == 0
    assert lost == []
    assert left_behind == []
    assert failed_errors(bases[0], states) == {}
    assert set(states.values()) == {"succeeded"}
    assert {t: n for t, n in ended.items() if n != 1} == {}
    assert len(ended) == len(accepted)
    assert_every_stream_honest_and_each_task_ran_once(bases[0], followers, streamed)
    assert report["keys_left_on_the_old_primary"] == 0
    # Sharded pub/sub: Redis ended the subscriptions on the old primary when the slot left it, and each process
    # (2 APIs, 2 workers) subscribed again on the slot's new owner.
    assert report["subscribers_on_the_old_and_new_primary"] == [0, 4]
    assert all(kinds[-1] == "end" and kinds.count("partial") == 10 for kinds in fresh_streams), fresh_streams
