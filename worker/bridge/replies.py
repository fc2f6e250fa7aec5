"""The request/reply pattern: a message with ``reply_to`` gets its task's outcome sent back there.

The reply request is kept in Redis (not in the bridge's memory), so whichever worker finishes the task
can answer, even after the receiving bridge is gone. The reply carries ``correlation_id`` = the
original message id, and ``session_id`` = the request's ``reply_to_session_id`` when it had one.
Delivery is at-least-once: a reply is marked sent only after Service Bus accepted it.
"""

from __future__ import annotations

import logging
from typing import Any

from arq.connections import ArqRedis
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient

from shared import keys
from shared.serialization import dumps, loads
from shared.status import is_final, task_view

logger = logging.getLogger("relay.bridge")


class ReplyBook:
    """Remembers reply requests and sends each reply once its task has an outcome."""

    def __init__(self, pool: ArqRedis, client: ServiceBusClient, queue_name: str, ttl_seconds: int) -> None:
        self._pool = pool
        self._client = client
        self._queue_name = queue_name
        self._ttl = ttl_seconds

    async def remember(self, task_id: str, message: ServiceBusReceivedMessage) -> None:
        """Record where to reply, before the task can possibly finish."""
        if not message.reply_to:
            return
        request = {
            "reply_to": message.reply_to,
            "session_id": message.reply_to_session_id,
            "message_id": str(message.message_id),
        }
        await self._pool.set(keys.reply_request(task_id), dumps(request), ex=self._ttl)

    async def send_for(self, task_id: str, state: str, data: Any) -> None:
        """Send the outcome to the requester, if one asked and no reply went out yet."""
        raw = await self._pool.get(keys.reply_request(task_id))
        if raw is None or await self._pool.exists(keys.reply_sent(task_id)):
            return
        request = loads(raw)
        outcome = {"task_id": task_id, "state": state, ("result" if state == "succeeded" else "error"): data}
        reply = ServiceBusMessage(
            dumps(outcome),
            correlation_id=request["message_id"],
            session_id=request["session_id"],
            content_type="application/json",
            application_properties={"relay_state": state},
        )
        async with self._client.get_queue_sender(request["reply_to"]) as sender:
            await sender.send_messages(reply)
        await self._pool.set(keys.reply_sent(task_id), b"1", ex=self._ttl)

    async def send_if_finished(self, task_id: str) -> None:
        """For a redelivered request whose task had already finished: reply now."""
        view = await task_view(self._pool, self._queue_name, task_id)
        if view is not None and is_final(view):
            data = view["result"] if view["state"] == "succeeded" else view["error"]
            await self.send_for(task_id, view["state"], data)
