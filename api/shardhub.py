"""The pub/sub hubs of a queue over several shards (``RELAY_QUEUE_SHARDS``; the layout is in ``shared/keys.py``).

A script publishes a task's events on channels in the task's slot (its shard's: a sharded ``SPUBLISH`` reaches
only that slot's nodes), so an API process needs a subscription in each shard's slot: one ``PubSubHub`` per shard,
each with its own connection (to the primary of that slot) and its own inbox channel in that slot. A task's
submit names the inbox of the task's shard. Every call goes to the hub of the shard the request works on
(``keys.on_task_shard``, set by the route from the task's id): the routes and the streams use this as they use
one hub. With one shard the API keeps its one ``PubSubHub`` and never builds this.
"""

from __future__ import annotations

import contextlib

from redis.asyncio import Redis

from api.hub import PubSubHub, Subscription
from shared import keys


class ShardedHubs:
    """One ``PubSubHub`` per shard, each call handed to the hub of the shard it works on (``keys.current_shard``)."""

    def __init__(self, redis: Redis, queue_name: str, process: str) -> None:
        self.hubs: list[PubSubHub] = []
        for shard in keys.shards():
            with keys.on_shard(shard):  # its connection goes to that shard's slot, its inbox is in it
                self.hubs.append(PubSubHub(redis, inbox=keys.inbox_channel(queue_name, process)))

    @property
    def _hub(self) -> PubSubHub:
        return self.hubs[keys.current_shard()]

    @property
    def inbox(self) -> str | None:
        """The inbox of the shard this call works on, once subscribed."""
        return self._hub.inbox

    @property
    def draining(self) -> bool:
        return self.hubs[0].draining

    @property
    def stream_count(self) -> int:
        return sum(hub.stream_count for hub in self.hubs)

    @property
    def channel_count(self) -> int:
        return sum(hub.channel_count for hub in self.hubs)

    async def start(self) -> None:
        """Start every shard's hub (safe to call again: a started hub keeps what it has done)."""
        for shard, hub in enumerate(self.hubs):
            with keys.on_shard(shard):
                await hub.start()

    async def close(self) -> None:
        for hub in self.hubs:
            await hub.close()

    def drain(self) -> None:
        for hub in self.hubs:
            hub.drain()

    def follow_inbox(self, task_id: str) -> contextlib.AbstractContextManager[Subscription]:
        return self._hub.follow_inbox(task_id)

    def subscribe(self, task_id: str) -> contextlib.AbstractAsyncContextManager[Subscription]:
        return self._hub.subscribe(task_id)

    def subscribe_channel(self, name: str) -> contextlib.AbstractAsyncContextManager[Subscription]:
        return self._hub.subscribe_channel(name)
