"""A Redis Cluster slot on the move (a reshard; issue #22): Relay's scripts wait until it has settled, and the
clients wait with them. The live reshard under load is ``tests/e2e/test_cluster_reshard.py``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import ClusterError, ResponseError

from bench.harness.redis_servers import Cluster, Server, start_cluster
from shared import keys
from shared.redis import RelayCluster, api_client, close, sync_client, worker_client
from shared.settings import Settings

NAMESPACE = "relay:rs:unit"


def cluster_settings(url: str = "redis://127.0.0.1:1/0") -> Settings:
    return Settings(redis_url=url, redis_cluster=True, queue_name=NAMESPACE)


async def test_a_workers_cluster_client_waits_until_a_moving_slot_has_settled() -> None:
    """redis-py gives up on ``TRYAGAIN`` after 16 tries (about 0.4 s, ``ClusterError("TTL exhausted.")``); a
    reshard keeps a slot with many keys half moved longer than that. Nothing ran, so sending again is safe."""
    patient = worker_client(cluster_settings())
    assert isinstance(patient, RelayCluster)
    calls = 0

    async def slot_moving_twice() -> str:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ClusterError("TTL exhausted.")
        return "ok"

    assert await patient.within_budget(slot_moving_twice) == "ok"
    assert calls == 3


async def test_every_script_call_on_a_cluster_declares_the_migration_guard() -> None:
    """No I/O: what the workers' and the API's cluster clients send (the threads' is in the real-cluster test)."""
    sent: list[tuple[Any, ...]] = []

    async def evalsha(*args: Any) -> None:
        sent.append(args)

    with keys.layout(NAMESPACE, cluster=True):
        guard = keys.cluster_tag(NAMESPACE) + keys.MIGRATION_GUARD_PREFIX + keys.schedule(NAMESPACE)
        assert keys.migration_guard(NAMESPACE) == guard
        for client in (worker_client(cluster_settings()), api_client(cluster_settings())):
            client.evalsha = evalsha  # type: ignore[method-assign, assignment]
            await client.register_script("return 1")(keys=["{relay:rs:unit}a"], args=["x"])
    assert [args[1:] for args in sent] == [(2, "{relay:rs:unit}a", guard, "x")] * 2
    assert key_slot(guard.encode()) == key_slot(keys.cluster_tag(NAMESPACE).encode())


@pytest.fixture(scope="module")
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three primaries of this module's own: a slot is left migrating for a while."""
    started = start_cluster(Path(tmp_path_factory.mktemp("reshard")), primaries=3, replicas=0)
    try:
        yield started
    finally:
        started.stop()


def _owner_and_other(cluster: Cluster, slot: int) -> tuple[Server, Server]:
    with cluster.servers[0].client() as client:
        owner = next(int(p[1]) for lo, hi, p, *_ in client.execute_command("CLUSTER", "SLOTS") if lo <= slot <= hi)
    source = next(s for s in cluster.servers if s.port == owner)
    return source, next(s for s in cluster.servers if s.port != owner)


def _set_slot(server: Server, slot: int, *state: str) -> None:
    with server.client() as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, *state)


def _node_id(server: Server) -> str:
    with server.client() as client:
        return str(client.execute_command("CLUSTER", "MYID").decode())


# Like Relay's scripts: a write to a key it was given, then a key it builds itself (an arq job, a lane, ...).
HALF_WAY = "redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1] .. ':built')"


@pytest.mark.cluster
async def test_a_script_does_not_run_while_its_slot_migrates(small_cluster: Cluster) -> None:
    """The slot half moved (``CLUSTER SETSLOT`` MIGRATING/IMPORTING, as ``redis-cli --cluster reshard`` does before
    its MIGRATEs): the key the script is given is still on the old node, the one it builds is not there. Without
    the guard the script ran there, wrote, and then failed ("Script attempted to access a non local key"),
    leaving its first write behind; with it, the cluster refuses the whole call (TRYAGAIN) until the slot has
    settled, and the call then runs once."""
    tag = keys.cluster_tag(NAMESPACE)
    slot = key_slot(tag.encode())
    source, target = _owner_and_other(small_cluster, slot)
    counter = f"{tag}counter"
    with source.client() as plain:
        plain.delete(counter)
        plain.set(counter, 0)
    settings = cluster_settings(f"redis://127.0.0.1:{source.port}/0")
    with keys.layout(NAMESPACE, cluster=True):
        client = api_client(settings)
        try:
            script = client.register_script(HALF_WAY)
            _set_slot(target, slot, "IMPORTING", _node_id(source))
            _set_slot(source, slot, "MIGRATING", _node_id(target))
            try:
                started = time.monotonic()
                with pytest.raises(ClusterError) as refused:
                    await script(keys=[counter])
                assert not isinstance(refused.value, ResponseError)  # "TTL exhausted.", not an error mid-script
                assert time.monotonic() - started < 5
                with source.client() as plain:
                    assert plain.get(counter) == b"0"  # nothing of the script was applied
            finally:
                _set_slot(source, slot, "STABLE")  # the move is called off: the slot stays where it was
                _set_slot(target, slot, "STABLE")
            assert await script(keys=[counter]) is None
            with source.client() as plain:
                assert plain.get(counter) == b"1"
        finally:
            await close(client)


@pytest.mark.cluster
def test_the_lease_threads_scripts_wait_too(small_cluster: Cluster) -> None:
    """The synchronous client (lease renewals) declares the guard as well: refused whole while the slot moves."""
    tag = keys.cluster_tag(NAMESPACE)
    slot = key_slot(tag.encode())
    source, target = _owner_and_other(small_cluster, slot)
    counter = f"{tag}sync-counter"
    with source.client() as plain:
        plain.set(counter, 0)
    with keys.layout(NAMESPACE, cluster=True):
        client = sync_client(cluster_settings(f"redis://127.0.0.1:{source.port}/0"))
        try:
            script = client.register_script(HALF_WAY)
            _set_slot(target, slot, "IMPORTING", _node_id(source))
            _set_slot(source, slot, "MIGRATING", _node_id(target))
            try:
                with pytest.raises(ClusterError):
                    script(keys=[counter])
                with source.client() as plain:
                    assert plain.get(counter) == b"0"
            finally:
                _set_slot(source, slot, "STABLE")
                _set_slot(target, slot, "STABLE")
        finally:
            client.close()
