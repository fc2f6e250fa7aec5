"""Subscriptions on a Redis Cluster follow the nodes that are up (``shared.redis.RelayCluster.pubsub``).

The connection class is checked on two plain redis-servers standing for two nodes (a cluster broadcasts classic
``PUBLISH`` to every node; here the test publishes on the node the subscriber should have moved to); the cluster
client's part on the session's cluster. Also here: a worker's cluster client sends a command or a pipeline again
through a failover for a time budget, as on one Redis (``RelayCluster.within_budget``). The failover under load is
``tests/e2e/test_cluster_failover.py``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis
from redis.asyncio import ConnectionPool
from redis.asyncio.client import PubSub
from redis.crc import key_slot
from redis.exceptions import RedisError

from api.hub import Delivery, PubSubHub, Signal
from bench.harness.client import read_events, submit_ok, types
from bench.harness.processes import ManagedProcess
from shared import keys
from shared.redis import RelayCluster, api_client, close, stop_retrying_at, worker_client
from shared.redis_pools import AsyncClusterPubSubConnection
from shared.settings import Settings
from shared.wakeup import notify_workers
from tests.support import slots
from worker.engine.engine import Engine
from worker.wakeup import WakeupListener

SpawnRedis = Callable[..., tuple[ManagedProcess, str]]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def subscribed(port: int) -> int:
    """Connections of the server on ``port`` subscribed to a channel."""
    with redis.Redis(port=port, socket_timeout=5) as client:
        return sum(int(c.get("sub", 0)) > 0 for c in client.client_list())


async def receive_published_on(pubsub: PubSub, port: int, channel: str, timeout: float = 15) -> Any:
    """Read ``pubsub`` as the API's hub does (a lost connection: wait, read again, which reconnects) while
    publishing on the server on ``port``, until a message arrives."""
    deadline = time.monotonic() + timeout
    with redis.Redis(port=port, socket_timeout=5) as publisher:
        while time.monotonic() < deadline:
            publisher.publish(channel, b"hello")
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            except (RedisError, OSError):
                await asyncio.sleep(0.1)
                continue
            if message is not None:
                return message
    raise AssertionError(f"no message published on port {port} arrived")


def follower_pool(first: int, second: int) -> ConnectionPool:
    return ConnectionPool(
        connection_class=AsyncClusterPubSubConnection,
        host="127.0.0.1",
        port=first,
        addresses=lambda: [("127.0.0.1", first), ("127.0.0.1", second)],
    )


async def test_a_subscriber_whose_node_dies_subscribes_again_on_one_that_is_up(spawn_redis: SpawnRedis) -> None:
    (first_proc, first_url), (_, second_url) = spawn_redis(), spawn_redis()
    first, second = port_of(first_url), port_of(second_url)
    pool = follower_pool(first, second)
    pubsub = PubSub(pool)
    try:
        await pubsub.subscribe("events")
        assert (subscribed(first), subscribed(second)) == (1, 0)
        first_proc.send(signal.SIGKILL)
        message = await receive_published_on(pubsub, second, "events")
        assert (message["channel"], message["data"]) == (b"events", b"hello")
        assert subscribed(second) == 1  # the channel was subscribed again there, as redis-py does on a reconnect
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await pool.disconnect()


async def test_the_node_lost_last_is_tried_last(spawn_redis: SpawnRedis) -> None:
    """The first node is still up but cut this subscriber off: the next connection goes to the other one
    (a node that just dropped its clients is the likeliest to be on its way down)."""
    (_, first_url), (_, second_url) = spawn_redis(), spawn_redis()
    first, second = port_of(first_url), port_of(second_url)
    pool = follower_pool(first, second)
    pubsub = PubSub(pool)
    try:
        await pubsub.subscribe("events")
        with redis.Redis(port=first, socket_timeout=5) as admin:
            assert admin.client_kill_filter(_type="pubsub") == 1
        await receive_published_on(pubsub, second, "events")
        assert (subscribed(first), subscribed(second)) == (0, 1)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await pool.disconnect()


@pytest.mark.cluster
async def test_the_cluster_client_offers_every_node_and_keeps_subscriptions_when_it_rereads_the_layout(
    redis_cluster_url: str,
) -> None:
    client = worker_client(Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name="relay:cf:pubsub"))
    assert isinstance(client, RelayCluster)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await client.set("pubsub-probe", 1)  # the client reads the cluster's layout
        addresses = client._pubsub_addresses()
        url = ("127.0.0.1", port_of(redis_cluster_url))
        owner = _slot_owner(client, "relay:cf:pubsub")
        assert addresses[: 1 if owner == url else 2] == list(dict.fromkeys([owner, url]))  # the queue's node, the URL's
        known = {(str(node.host), int(node.port)) for node in client.get_nodes()}
        assert set(addresses[1:]) | {addresses[0]} == known  # then every node the client knows
        assert len(addresses) >= 3  # the three primaries at least (replicas once CLUSTER SLOTS lists them)
        channel = keys.cluster_tag("relay:cf:pubsub") + "channel"
        await pubsub.subscribe(channel)
        connection = pubsub.connection
        # redis-py calls aclose() itself after a lost connection, to read the layout afresh: the subscription of
        # a node that is fine stays as it is.
        await client.aclose()
        await client.publish(channel, "after")
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        assert message is not None
        assert message["data"] == b"after"
        assert pubsub.connection is connection  # never reconnected
        assert connection is not None
        assert connection.is_connected
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await close(client)


def _listeners(port: int, channel: str) -> int:
    """Sharded subscribers of ``channel`` on the node on ``port``."""
    with redis.Redis(port=port, socket_timeout=5) as client:
        return int(dict(client.pubsub_shardnumsub(channel)).get(channel.encode(), 0))


def _classic_listeners(port: int, channel: str) -> int:
    """Classic subscribers of ``channel`` on the node on ``port`` (a cluster counts them per node)."""
    with redis.Redis(port=port, socket_timeout=5) as client:
        return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))


def _slot_owner(client: RelayCluster, namespace: str) -> tuple[str, int]:
    node = client.nodes_manager.get_node_from_slot(key_slot(keys.cluster_tag(namespace).encode()))
    return str(node.host), int(node.port)


@pytest.mark.cluster
async def test_a_subscription_sits_on_the_primary_that_holds_its_queue_not_on_the_urls_node(
    redis_cluster_url: str,
) -> None:
    """A channel's SPUBLISH goes to the node of its slot only: the subscription is a sharded one, there (no hop
    over the cluster bus, which held 1 to 2 % of classic messages about 40 ms, BENCHMARKS.md section 12)."""
    url_port = port_of(redis_cluster_url)
    probe = worker_client(Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name="relay:cf:probe"))
    try:
        await probe.set("pubsub-probe", 1)  # read the layout
        namespace = next(
            name for name in (f"relay:cf:owner{i}" for i in range(100)) if _slot_owner(probe, name)[1] != url_port
        )
        owner_port = _slot_owner(probe, namespace)[1]
    finally:
        await close(probe)
    client = worker_client(Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=namespace))
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await client.set("pubsub-probe", 1)
        channel = keys.cluster_tag(namespace) + "channel"
        await pubsub.subscribe(channel)
        deadline = time.monotonic() + 10  # SUBSCRIBE is sent, not awaited: poll for the server's count
        while _listeners(owner_port, channel) + _listeners(url_port, channel) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert (_listeners(owner_port, channel), _listeners(url_port, channel)) == (1, 0)
        assert (_classic_listeners(owner_port, channel), _classic_listeners(url_port, channel)) == (0, 0)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await close(client)


def _calls(port: int) -> Counter[str]:
    """Commands the node on ``port`` ran, by name (``INFO commandstats``: those a script ran count too)."""
    with redis.Redis(port=port, socket_timeout=5) as client:
        stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()})


@pytest.mark.cluster
def test_on_a_cluster_the_scripts_publish_with_spublish_and_a_stream_gets_every_event(
    relay_cluster: str, redis_cluster_url: str
) -> None:
    """Classic PUBLISH crosses the cluster bus to every node; SPUBLISH reaches only the slot's nodes."""
    nodes = list(slots.primaries(port_of(redis_cluster_url)).values())
    owner = slots.owner(nodes[0], key_slot(keys.cluster_tag("relay:queue").encode()))
    before = {port: _calls(port) for port in nodes}
    task_id = submit_ok(relay_cluster, {"task": "count", "kwargs": {"n": 5, "interval": 0.05}})
    events = read_events(relay_cluster, task_id)
    assert types(events) == ["started", *["partial"] * 5, "result", "end"]
    assert [e["seq"] for e in events] == list(range(1, 9))
    after = {port: _calls(port) for port in nodes}
    # the enqueue's wake-up notice and the commits' events (a commit publishes its batch as one message)
    assert after[owner]["spublish"] - before[owner]["spublish"] >= 3
    assert all(after[port]["publish"] == before[port]["publish"] for port in nodes)


def _moving(namespace: str, url: str) -> tuple[int, int, int]:
    """The slot of ``namespace``, its owner's port and another primary's (not the URL's node if there is one)."""
    url_port = port_of(url)
    slot = key_slot(keys.cluster_tag(namespace).encode())
    source = slots.owner(url_port, slot)
    others = [p for p in slots.primaries(url_port).values() if p != source]
    return slot, source, next((p for p in others if p != url_port), others[0])


async def _until(check: Callable[[], Any], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.cluster
async def test_when_the_slot_moves_the_hub_subscribes_on_its_new_owner_and_its_streams_resync(
    redis_cluster_url: str,
) -> None:
    """Redis ends a sharded subscription whose slot leaves the node (``sunsubscribe``): the hub follows the slot,
    and its streams re-read the log for whatever was published meanwhile."""
    namespace = "relay:cf:moves"
    slot, source, target = _moving(namespace, redis_cluster_url)
    client = api_client(Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=namespace))
    hub = PubSubHub(client)
    channel = keys.events_channel("t1")
    try:
        await hub.start()
        async with hub.subscribe("t1") as sub:
            assert (_listeners(source, channel), _listeners(target, channel)) == (1, 0)
            slots.move(source, slot, target)
            got = await asyncio.wait_for(sub.queue.get(), 15)
            assert got is Signal.RESYNC

            async def on_target() -> bool:
                return (_listeners(source, channel), _listeners(target, channel)) == (0, 1)

            await _until(on_target, "the subscription on the slot's new owner")
            raw = b'{"seq":7,"type":"partial","task_id":"t1","ts":0,"data":1}'
            await client.publish(channel, raw)
            while (item := await asyncio.wait_for(sub.queue.get(), 15)) is Signal.RESYNC:
                pass  # the re-subscribe's own notice: events published meanwhile are in the log
            assert isinstance(item, Delivery)
            assert (item.head.seq, item.raw) == (7, raw)
    finally:
        await hub.close()
        await close(client)
        slots.move(target, slot, source)


@pytest.mark.cluster
def test_a_stream_open_while_its_slot_moves_follows_it_and_gets_every_event(
    relay_cluster: str, redis_cluster_url: str
) -> None:
    """The API's subscription is ended by the old owner, comes back on the new one, and the stream re-reads the
    log: every event arrives, in order, none announced missing."""
    slot, source, target = _moving("relay:queue", redis_cluster_url)
    task_id = submit_ok(relay_cluster, {"task": "count", "kwargs": {"n": 40, "interval": 0.1}})
    with keys.layout("relay:queue", cluster=True):
        channel = keys.events_channel(task_id)
    events: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: events.extend(read_events(relay_cluster, task_id)))
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while _listeners(source, channel) == 0:
            assert time.monotonic() < deadline, "the stream never subscribed"
            time.sleep(0.05)
        slots.move(source, slot, target)
        while _listeners(target, channel) == 0:  # while the task still runs (4 s)
            assert time.monotonic() < deadline, "the stream's subscription never reached the slot's new owner"
            time.sleep(0.05)
        reader.join(30)
        assert not reader.is_alive()
        assert types(events) == ["started", *["partial"] * 40, "result", "end"]
        assert [e["seq"] for e in events] == list(range(1, 44))
    finally:
        reader.join(30)
        slots.move(target, slot, source)


@pytest.mark.cluster
async def test_a_sharded_subscriptions_own_unsubscribes_are_not_taken_for_a_moved_slot(
    redis_cluster_url: str,
) -> None:
    namespace = "relay:cf:own"
    client = worker_client(Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=namespace))
    pubsub = client.pubsub()
    first, second = keys.events_channel("a"), keys.events_channel("b")
    try:
        await pubsub.subscribe(first)
        await pubsub.subscribe(second)
        await pubsub.unsubscribe(first)
        await pubsub.unsubscribe(second)  # two asked for before either answer is read
        await pubsub.subscribe(first)
        seen = [(await pubsub.get_message(timeout=5))["type"] for _ in range(5)]
        assert seen == ["subscribe", "subscribe", "unsubscribe", "unsubscribe", "subscribe"]
        connection = pubsub.connection
        await client.publish(first, b"still here")
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        assert (message["type"], message["data"]) == ("message", b"still here")
        assert pubsub.connection is connection
        assert connection is not None
        assert connection.is_connected  # never dropped as if its slot had moved
        with pytest.raises(ValueError, match="not in slot"):
            await pubsub.subscribe("untagged")
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await close(client)


class _Engine:
    """What the wake-up listener tells: whether a claim was asked for, and the job notices."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.jobs = 0

    def note_job(self, shard: int = 0) -> None:
        self.jobs += 1
        self.wake.set()

    def catch_up(self, shard: int = 0) -> None:
        self.wake.set()


@pytest.mark.cluster
async def test_when_the_slot_moves_a_workers_wakeup_listener_follows_it_and_claims_once(
    redis_cluster_url: str,
) -> None:
    namespace = "relay:cf:wakes"
    slot, source, target = _moving(namespace, redis_cluster_url)
    client = worker_client(Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=namespace))
    engine = _Engine()
    listener = WakeupListener(client, namespace, cast(Engine, engine))
    channel = keys.wakeup_channel(namespace)
    try:
        await listener.start()

        async def subscribed_on(port: int) -> bool:
            return _listeners(port, channel) == 1

        await _until(lambda: subscribed_on(source), "the subscription on the slot's owner")
        slots.move(source, slot, target)

        async def woken() -> bool:
            return engine.wake.is_set()

        await _until(woken, "the claim after the subscription came back")  # before any notice: the catch-up claim
        assert engine.jobs == 0
        await _until(lambda: subscribed_on(target), "the subscription on the slot's new owner")
        await notify_workers(client, namespace)

        async def noticed() -> bool:
            return engine.jobs == 1

        await _until(noticed, "the notice published on the new owner")
    finally:
        await listener.close()
        await close(client)
        slots.move(target, slot, source)


def cluster_settings(url: str = "redis://127.0.0.1:1/0") -> Settings:
    return Settings(redis_url=url, redis_cluster=True, queue_name="relay:cf:budget")


async def test_a_workers_cluster_client_sends_again_through_a_failover_until_its_budget_or_cutoff() -> None:
    """No I/O: the clients connect lazily, and ``within_budget`` is given what to send."""
    patient, hasty = worker_client(cluster_settings()), api_client(cluster_settings())
    assert isinstance(patient, RelayCluster)
    assert isinstance(hasty, RelayCluster)
    calls: list[float] = []

    async def refused_twice() -> str:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise redis.exceptions.ConnectionError("refused")
        return "ok"

    assert await patient.within_budget(refused_twice) == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(redis.exceptions.ConnectionError):
        await hasty.within_budget(refused_twice)  # the API fails fast: its 503 tells the client when to retry
    assert len(calls) == 1
    calls.clear()
    stop_retrying_at(patient, time.monotonic())  # a stopping worker gives Redis no more time
    with pytest.raises(redis.exceptions.ConnectionError):
        await patient.within_budget(refused_twice)
    assert len(calls) == 1


@pytest.mark.cluster
async def test_a_workers_pipeline_on_a_cluster_goes_through_the_budget(redis_cluster_url: str) -> None:
    client = worker_client(cluster_settings(redis_cluster_url))
    sent = 0
    budget = RelayCluster.within_budget

    async def counting(self: RelayCluster, send: Any) -> Any:
        nonlocal sent
        sent += 1
        return await budget(self, send)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(RelayCluster, "within_budget", counting)
            async with client.pipeline(transaction=False) as pipe:
                pipe.set("{relay:cf:budget}a", 1)
                pipe.get("{relay:cf:budget}a")
                assert await pipe.execute() == [True, b"1"]
        assert sent == 1  # the pipeline's execute, once (its commands do not go through execute_command)
    finally:
        await close(client)


async def test_a_hand_off_pop_on_a_cluster_goes_to_its_slot_without_asking_for_its_keys(redis_cluster_url: str) -> None:
    """BLMPOP's keys move, and redis-py asks a node for them (``COMMAND GETKEYS``) before each call, a round trip
    more per hand-off: ``RelayCluster`` routes it by its one key instead."""
    namespace = "relay:cf:blmpop"
    client = worker_client(Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=namespace))
    nodes = list(slots.primaries(port_of(redis_cluster_url)).values())
    try:
        key = keys.handoff("host:1:pop")
        await client.rpush(key, b"a", b"b")  # type: ignore[misc]

        def getkeys_calls() -> int:
            total = 0
            for port in nodes:
                with redis.Redis(port=port, socket_timeout=5) as node:
                    total += int(node.info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0))
            return total

        before = getkeys_calls()
        got = await client.blmpop(1, 1, key, direction="LEFT", count=100)  # type: ignore[arg-type,misc]
        assert got == [key.encode(), [b"a", b"b"]]
        assert getkeys_calls() == before
    finally:
        await close(client)
