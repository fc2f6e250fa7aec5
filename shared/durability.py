"""Acknowledge a submit only once replicas have it (``RELAY_REDIS_WAIT_REPLICAS``), for Redis HA.

Redis replicates asynchronously: a primary that dies right after answering an enqueue can take the job
with it, and the replica promoted in its place never saw it. With the setting on, the enqueue runs on
one pinned connection and is followed by ``WAIT numreplicas timeout`` on that same connection (WAIT
counts the writes of the connection it is sent on), so a 202 means the replicas have the job too.

If WAIT times out the job is still on the primary and will probably run; the caller gets
``NotReplicated`` with the task id, and resubmitting with that id is safe (200 if the job survived, 202
if a failover lost it).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from arq.connections import ArqRedis

from shared.settings import Settings


class NotReplicated(Exception):
    """The job is on the primary, but fewer replicas than required confirmed it in time."""

    def __init__(self, task_id: str, confirmed: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(f"task {task_id} reached {confirmed} of {wanted} replicas within {timeout_ms} ms")
        self.task_id = task_id
        self.confirmed = confirmed
        self.wanted = wanted


@contextlib.asynccontextmanager
async def pinned(pool: ArqRedis, settings: Settings) -> AsyncIterator[ArqRedis]:
    """The client to enqueue with: ``pool`` itself when WAIT is off (no cost), else a client holding one
    connection of ``pool`` until the block ends, so ``confirm`` can WAIT for that connection's writes."""
    if not settings.redis_wait_replicas:
        yield pool
        return
    client = ArqRedis(
        pool.connection_pool,
        job_serializer=pool.job_serializer,
        job_deserializer=pool.job_deserializer,
        default_queue_name=pool.default_queue_name,
        single_connection_client=True,
    )
    try:
        yield client
    finally:
        await client.aclose()  # gives the connection back; the shared pool stays open


async def confirm(client: ArqRedis, settings: Settings, task_id: str) -> None:
    """WAIT until ``RELAY_REDIS_WAIT_REPLICAS`` replicas have this connection's writes, or raise ``NotReplicated``."""
    wanted, timeout_ms = settings.redis_wait_replicas, settings.redis_wait_timeout_ms
    if not wanted:
        return
    confirmed = int(await client.wait(wanted, timeout_ms))
    if confirmed < wanted:
        raise NotReplicated(task_id, confirmed, wanted, timeout_ms)
