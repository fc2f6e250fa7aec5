"""Acknowledge a submit only once replicas have it (``RELAY_REDIS_WAIT_REPLICAS``), for Redis HA.

Redis replicates asynchronously: a primary that dies right after answering an enqueue can take the job
with it, and the replica promoted in its place never saw it. With the setting on, each enqueue batch
(``shared.enqueue.Enqueuer``) sends its script and ``WAIT numreplicas timeout`` in one pipeline on one
connection (WAIT counts the writes of the connection it is sent on), so a 202 means the replicas have the
job too; a workflow submit (``shared.workflows.store.Workflows.submit``) waits the same way. On a Redis
Cluster that connection is one to the primary that holds the queue's slot (every key of a queue is in one
slot), found afresh after a MOVED (``shared.redis.RelayCluster.script_then_wait``).

A write of ``keys.replication_mark`` goes between the script and WAIT: WAIT confirms the writes of its own
connection, and a script that finds its task (or workflow) already there (a resend after a lost reply, a
resubmit after a 503) writes nothing, so its WAIT would return at once whatever the replicas hold. After
the mark, a confirmation covers the existing job too: a 200 for an existing id is as confirmed as a 202.

If WAIT times out the job is still on the primary and will probably run; the caller gets
``NotReplicated`` with the task id, and resubmitting with that id is safe (200 once a replica has the job,
202 if a failover lost it, 503 again while the replicas still lag).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared import keys as relay_keys
from shared.redis import MARK_MS, RelayCluster
from shared.settings import Settings


class NotReplicated(Exception):
    """The job is on the primary, but fewer replicas than required confirmed it in time."""

    def __init__(self, task_id: str, confirmed: int, wanted: int, timeout_ms: int, what: str = "task") -> None:
        super().__init__(f"{what} {task_id} reached {confirmed} of {wanted} replicas within {timeout_ms} ms")
        self.task_id = task_id
        self.confirmed = confirmed
        self.wanted = wanted


def check(settings: Settings, confirmed: int, task_id: str, what: str = "task") -> NotReplicated | None:
    """The refusal for a task (or ``what`` else) created in a batch that ``confirmed`` replicas acknowledged, if
    too few."""
    wanted = settings.redis_wait_replicas
    if confirmed >= wanted:
        return None
    return NotReplicated(task_id, confirmed, wanted, settings.redis_wait_timeout_ms, what)


async def script_then_wait(
    client: Redis, script: AsyncScript, keys: Sequence[str], args: Sequence[Any], settings: Settings
) -> tuple[Any, int]:
    """``script``'s reply, and how many replicas confirmed its writes: the script and ``WAIT`` go on one connection
    (on a cluster, to the primary of the keys' slot). Sent again after a lost connection: ``script`` must be safe
    to apply twice."""
    wanted, timeout_ms = settings.redis_wait_replicas, settings.redis_wait_timeout_ms
    mark = relay_keys.replication_mark(settings.queue_name)
    if isinstance(client, RelayCluster):
        return await client.script_then_wait(script, keys, args, mark, wanted, timeout_ms)
    async with client.pipeline(transaction=False) as pipe:
        await script(keys=keys, args=args, client=pipe)
        pipe.set(mark, 1, px=MARK_MS)
        pipe.execute_command("WAIT", wanted, timeout_ms)
        reply, _, confirmed = await pipe.execute()
    return reply, int(confirmed)


_NOTHING = "return 1"  # a script that writes nothing: only the mark after it counts (``replicas_confirm``)


async def replicas_confirm(client: Redis, settings: Settings) -> bool:
    """Whether enough replicas (``RELAY_REDIS_WAIT_REPLICAS``) confirm a write of the queue's mark within the wait
    timeout right now: what a submit waits for, asked without submitting anything (the Service Bus bridge waits
    for it before it receives again after ``NotReplicated``)."""
    script = client.register_script(_NOTHING)
    queue = relay_keys.schedule(settings.queue_name)  # the queue's slot, on a cluster
    _, confirmed = await script_then_wait(client, script, [queue], [], settings)
    return confirmed >= settings.redis_wait_replicas
