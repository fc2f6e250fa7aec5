"""A Redis Cluster none of whose nodes answers (a cluster restarting, its endpoint cut off): redis-py's cluster
clients raise ``RedisClusterException`` when they cannot read the layout, and ``SlotNotCoveredError`` when no node
serves a slot, neither of them a ``RedisError``. Every handler of Redis failures let them through: the API answered
500, a worker exited, the lease renewal thread and the bridge's reply sender died. Relay raises both as
``shared.redis_errors.ClusterUnreachable``, a ``ConnectionError``, and rides them out as any outage
(``shared.cluster_nodes``, ``shared.redis``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from redis.exceptions import AuthenticationError

from bench.harness.processes import wait_until
from bench.harness.redis_servers import Cluster, start_cluster
from shared import keys
from shared.redis import api_client, close, connect_fail_fast, sync_client
from shared.redis_errors import AUTH, UNAVAILABLE, ClusterUnreachable, classify
from shared.settings import Settings
from tests.conftest import StartWorker
from worker.bridge.replies import ReplySender
from worker.engine.engine import Engine
from worker.engine.leases import LeaseKeeper

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own (the test stops every node), primaries only."""
    started = start_cluster(tmp_path, replicas=0)
    try:
        yield started
    finally:
        started.stop()


def settings_of(cluster: Cluster, **fields: Any) -> Settings:
    return Settings(
        redis_url=cluster.url, redis_cluster=True, queue_name=f"relay:gone:{uuid.uuid4().hex[:6]}", **fields
    )


async def test_the_api_client_reports_a_cluster_it_cannot_reach_as_unavailable(cluster: Cluster) -> None:
    with keys.layout_kept():
        pool = api_client(settings_of(cluster))
        try:
            await pool.get("read-the-layout")
            cluster.stop()
            with pytest.raises(ClusterUnreachable) as raised:
                await pool.get(keys.job("t1"))
            assert classify(raised.value) is UNAVAILABLE  # the API's 503, not a 500
        finally:
            await close(pool)


def test_the_sync_client_reports_it_as_a_redis_error(cluster: Cluster) -> None:
    with keys.layout_kept():
        client = sync_client(settings_of(cluster))
        try:
            client.get("read-the-layout")
            cluster.stop()
            with pytest.raises(ClusterUnreachable):
                client.get(keys.job("t1"))
        finally:
            client.close()


def test_the_lease_renewal_thread_outlives_the_outage(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay")
    with keys.layout_kept():
        keeper = LeaseKeeper(
            settings_of(cluster, lease_seconds=1.5),
            "token",
            cast(Engine, SimpleNamespace(lease_lost=lambda *args: None)),
        )
        keeper.start(lambda *args: None)
        try:
            keeper.hold("t-1", time.monotonic() + 60)
            wait_until(lambda: keeper.renewals > 0, 10, "a renewal (the layout read)")
            cluster.stop()
            keeper.hold("t-2", time.monotonic() + 60)  # (t-1 was given up: no such lease in Redis)
            wait_until(lambda: "could not renew" in caplog.text, 20, "a renewal to fail")
            assert keeper._thread is not None
            assert keeper._thread.is_alive()
            assert "Traceback" not in caplog.text  # met as a Redis outage, not as an unexpected error
        finally:
            keeper.stop()


async def test_the_reply_sender_outlives_the_outage(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay")
    with keys.layout_kept():
        settings = settings_of(cluster)
        pool = await connect_fail_fast(settings)
        sender = ReplySender(pool, cast(Any, None), settings.queue_name, settings.max_result_bytes)
        stopping = asyncio.Event()
        assert await sender.send_due()  # the layout read; nothing to send
        running = asyncio.create_task(sender.run(stopping))
        try:
            cluster.stop()
            sender.wake.set()
            deadline = time.monotonic() + 20
            while "reply outbox unreadable" not in caplog.text and not running.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not running.done(), running.exception()
            assert "reply outbox unreadable" in caplog.text
        finally:
            stopping.set()
            sender.wake.set()
            await asyncio.wait_for(running, 30)
            await close(pool)


def test_a_worker_rides_out_a_cluster_it_cannot_reach(cluster: Cluster, spawn_worker: StartWorker) -> None:
    worker = spawn_worker(url=cluster.url, RELAY_REDIS_CLUSTER="true", RELAY_QUEUE_NAME="relay:gone:worker")
    cluster.stop()
    # Its claims are tried again for 30 s (RETRY_BUDGET_SECONDS, as on one Redis), then the poll fails and is tried
    # again: it lived through the whole budget.
    wait_until(lambda: "poll failed" in worker.output() or worker.proc.poll() is not None, 90, "a poll to fail")
    assert worker.proc.poll() is None, worker.output()[-3000:]
    assert "Traceback" not in worker.output()


@pytest.mark.parametrize("given", ["wrong", ""], ids=["wrong-password", "no-password"])
async def test_a_cluster_that_refuses_relays_password_is_a_refusal_not_an_outage(tmp_path: Path, given: str) -> None:
    """Only a layout no node could give is an outage: a node that refused the credentials was reported as one too
    (a transient 503 and a worker waiting for ever), where it is ``redis_auth``, which no retry mends."""
    secured = start_cluster(tmp_path, replicas=0, password="right")
    try:
        url = secured.url.replace(":right@", f":{given}@" if given else "")
        with keys.layout_kept():
            pool = api_client(Settings(redis_url=url, redis_cluster=True, queue_name="relay:gone:auth"))
            try:
                with pytest.raises(AuthenticationError) as refused:
                    await pool.get("anything")
                assert classify(refused.value) is AUTH
            finally:
                await close(pool)
    finally:
        secured.stop()
