"""RELAY_REDIS_WAIT_REPLICAS on a Redis Cluster: the enqueue script and its WAIT go on one connection to the primary
that holds the queue's slot (``shared.redis.RelayCluster.script_then_wait``), and follow the slot to its new primary
after a failover; and the cluster clients' slot map survives one failover's MOVED applied twice
(``shared.cluster_nodes``). The failover under load is ``tests/e2e/test_cluster_failover.py``."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError

from bench.harness.processes import wait_until
from bench.harness.redis_servers import start_cluster
from shared import keys
from shared.durability import NotReplicated
from shared.enqueue import Enqueuer, Submitted, prepare
from shared.redis import RelayCluster, api_client, close, sync_client
from shared.settings import Settings
from shared.tasks import TaskSubmission
from tests.support.workflows import submit_chain
from worker.tasks import load

pytestmark = pytest.mark.cluster


def node(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=5)


def slot_nodes(url: str, namespace: str) -> tuple[int, int] | None:
    """The ports of the primary that holds ``namespace``'s slot and of its replica (``CLUSTER SLOTS`` of the URL's
    node), once that node knows both (replicas are announced by gossip, shortly after the cluster is made)."""
    slot = key_slot(keys.cluster_tag(namespace).encode())
    with node(int(url.rsplit(":", 1)[1].split("/")[0])) as client:
        for first, last, primary, *replicas in client.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last and replicas:
                return int(primary[1]), int(replicas[0][1])
    return None


def owner_and_replica(url: str, namespace: str) -> tuple[int, int]:
    """``slot_nodes``, once known and the replica in sync."""
    wait_until(lambda: slot_nodes(url, namespace) is not None, 30, "the slot's primary and its replica")
    primary, replica = slot_nodes(url, namespace) or (0, 0)
    wait_until(lambda: replicas_online(primary) == 1, 30, "the replica to be in sync")
    return primary, replica


def replicas_online(port: int) -> int:
    """Replicas of the node on ``port`` in sync with it."""
    with node(port) as client:
        info = client.info("replication")
    return sum(1 for name, value in info.items() if name.startswith("slave") and value.get("state") == "online")


def has_key(port: int, key: str) -> bool:
    """Whether the node on ``port`` holds ``key`` (a replica too: READONLY)."""
    with node(port) as client:
        client.execute_command("READONLY")
        return bool(client.exists(key))


@contextmanager
def stopped(port: int) -> Iterator[None]:
    """The redis-server on ``port`` stopped (SIGSTOP) while the block runs: it acknowledges nothing."""
    with node(port) as client:
        pid = int(client.info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def wait_settings(url: str, namespace: str, timeout_ms: int = 1000) -> Settings:
    return Settings(redis_url=url, redis_cluster=True, queue_name=namespace, redis_wait_replicas=1,
                    redis_wait_timeout_ms=timeout_ms)  # fmt: skip


async def submit(enqueuer: Enqueuer, settings: Settings, task_id: str) -> Submitted:
    spec = load(["worker.tasks.demo"]).get("echo")
    return await enqueuer.enqueue(prepare(spec, settings, TaskSubmission(task="echo", id=task_id)))


async def test_a_submit_is_acknowledged_once_the_slots_replica_has_it(redis_cluster_url: str) -> None:
    namespace = f"relay:cw:{uuid.uuid4().hex[:8]}"
    settings = wait_settings(redis_cluster_url, namespace)
    pool = api_client(settings)
    try:
        _, replica = owner_and_replica(redis_cluster_url, namespace)
        task_id = f"w-{uuid.uuid4().hex[:8]}"
        submitted = await submit(Enqueuer(pool, settings), settings, task_id)
        assert submitted.created
        assert has_key(replica, keys.job(task_id))  # on the replica already when the submit returned
    finally:
        await close(pool)


def primary_of(url: str, tag: str) -> int:
    """The port of the primary that holds ``tag``'s slot."""
    slot = key_slot(tag.encode())
    with node(int(url.rsplit(":", 1)[1].split("/")[0])) as client:
        for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return int(primary[1])
    raise AssertionError(f"slot {slot} not covered")


async def test_a_submit_is_acknowledged_in_every_shard_whichever_primary_holds_it(redis_cluster_url: str) -> None:
    """With several shards, the mark written between the script and WAIT must be in the task's shard's slot:
    written in shard 0's, it was refused (MOVED) by every other primary, so every submit to a shard held
    elsewhere failed, resubmits too, though the task was stored."""
    shards = 3
    namespace = next(
        n
        for n in (f"relay:cw:{uuid.uuid4().hex[:8]}" for _ in range(100))
        if len({primary_of(redis_cluster_url, keys.shard_tag(n, s, shards)) for s in range(shards)}) > 1
    )
    for shard in range(shards):
        primary = primary_of(redis_cluster_url, keys.shard_tag(namespace, shard, shards))
        wait_until(lambda p=primary: replicas_online(p) == 1, 30, "the shard's replica to be in sync")  # type: ignore[misc]
    with keys.layout_kept():
        settings = Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=namespace, queue_shards=shards,
                            redis_wait_replicas=1, redis_wait_timeout_ms=1000)  # fmt: skip
        pool = api_client(settings)
        try:
            enqueuer = Enqueuer(pool, settings)
            for shard in range(shards):
                task_id = next(t for t in (f"w{shard}-{i}" for i in range(1000)) if keys.shard_of(t, shards) == shard)
                assert (await submit(enqueuer, settings, task_id)).created
                assert not (await submit(enqueuer, settings, task_id)).created  # a resend, answered as one
                with keys.on_shard(shard):
                    assert await pool.exists(keys.job(task_id))
        finally:
            await close(pool)


async def test_a_submit_whose_replica_is_stopped_is_refused_but_kept(redis_cluster_url: str) -> None:
    """WAIT sent on any other connection, or to another node, would return at once with a replica: the stopped
    replica of the queue's slot must make the submit's own WAIT time out."""
    namespace = f"relay:cw:{uuid.uuid4().hex[:8]}"
    settings = wait_settings(redis_cluster_url, namespace, timeout_ms=200)
    pool = api_client(settings)
    try:
        primary, replica = owner_and_replica(redis_cluster_url, namespace)
        enqueuer = Enqueuer(pool, settings)
        assert (await submit(enqueuer, settings, f"w-{uuid.uuid4().hex[:8]}")).created  # the layout is read
        task_id = f"w-{uuid.uuid4().hex[:8]}"
        with stopped(replica), pytest.raises(NotReplicated) as caught:
            await submit(enqueuer, settings, task_id)
        assert (caught.value.task_id, caught.value.confirmed, caught.value.wanted) == (task_id, 0, 1)
        assert has_key(primary, keys.job(task_id))  # still on the primary: it will probably run
        again = await submit(enqueuer, settings, task_id)
        assert again.created is False  # resubmitting the same id is safe: nothing new was written
        flow_id = f"f-{uuid.uuid4().hex[:8]}"
        with stopped(replica), pytest.raises(NotReplicated, match=r"^workflow "):  # a workflow submit waits too
            await submit_chain(pool, settings, flow_id)
        assert has_key(primary, keys.flow(flow_id))
    finally:
        await close(pool)


async def test_a_submit_follows_its_slot_to_the_new_primary(tmp_path: Path) -> None:
    """After a failover the client's layout still names the old primary: its MOVED is followed, the script loaded
    on the new primary (which never ran it: NOSCRIPT), and WAIT sent there, after the script, on one connection."""
    cluster = start_cluster(tmp_path)  # its own: the roles of the session's cluster stay as they are
    try:
        namespace = f"relay:cw:{uuid.uuid4().hex[:8]}"
        settings = wait_settings(cluster.url, namespace)
        old, new = owner_and_replica(cluster.url, namespace)
        pool = api_client(settings)
        try:
            enqueuer = Enqueuer(pool, settings)
            assert (await submit(enqueuer, settings, f"w-{uuid.uuid4().hex[:8]}")).created  # layout: ``old``
            with node(new) as client:
                client.execute_command("CLUSTER", "FAILOVER")  # a manual failover: nothing is lost
            wait_until(lambda: slot_nodes(cluster.url, namespace) == (new, old), 30, "the failover")
            wait_until(lambda: replicas_online(new) == 1, 30, "the old primary to replicate the new one")
            task_id = f"w-{uuid.uuid4().hex[:8]}"
            assert (await submit(enqueuer, settings, task_id)).created
            assert has_key(old, keys.job(task_id))  # the new primary's replica (the old primary) confirmed it
        finally:
            await close(pool)
    finally:
        cluster.stop()


async def test_one_failovers_moved_applied_twice_leaves_its_new_primary_a_primary(redis_cluster_url: str) -> None:
    """Two commands in flight when the slot's primary failed over both get the MOVED; redis-py < 7 demoted the new
    primary at the second (``shared.cluster_nodes``), and SCRIPT LOAD, sent to primaries, never reached it again.
    Only the clients' maps are changed here: the cluster keeps its roles."""
    namespace = f"relay:cw:{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=namespace)
    owner_and_replica(redis_cluster_url, namespace)  # the replica is known, so in the clients' maps
    pool = api_client(settings)
    threads = sync_client(settings)
    try:
        await pool.initialize()
        slot = key_slot(keys.cluster_tag(namespace).encode())
        for manager in (cast(RelayCluster, pool).nodes_manager, cast(SyncRedisCluster, threads).nodes_manager):
            primary, replica = manager.slots_cache[slot][:2]
            moved = MovedError(f"{slot} {replica.host}:{replica.port}")  # type: ignore[no-untyped-call]
            for _ in range(2):
                manager._moved_exception = moved
                owner = manager.get_node_from_slot(slot)
            assert (owner.name, owner.server_type) == (replica.name, "primary")
            assert [n.name for n in manager.slots_cache[slot]] == [replica.name, primary.name]
            assert replica.name in [n.name for n in manager.get_nodes_by_server_type("primary")]
    finally:
        threads.close()
        await close(pool)
