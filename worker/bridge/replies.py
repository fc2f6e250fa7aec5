"""The request/reply pattern: a message with ``reply_to`` gets its task's outcome sent back there.

The reply request is stored with the task, in the same script call that creates it (never for a redelivery
or an id conflict, so one message cannot redirect another task's reply). Whenever the task reaches a final
state (a worker's commit, an abort while it waited, a take-over of a lost worker's job, arq's own exits), the
same script that records it puts the task in the reply outbox (``relay:outbox:<queue>``) and publishes an
``o`` wake-up notice. Bridge workers send what is due from the outbox and remove it only once Service Bus
accepted the reply; a failed send is retried with backoff until it succeeds, and a sender that dies mid-send
leaves the entry to another after ``HOLD_SECONDS``. Delivery is at-least-once while the task's records live
(``RELAY_RESULT_TTL_SECONDS``); a reply still unsent when they expire is dropped with a warning. The reply carries
``correlation_id`` = the original message id and ``session_id`` = the request's ``reply_to_session_id``.
A reply obeys ``RELAY_MAX_RESULT_BYTES`` like the result it carries (``reply_body``).
With several shards (``RELAY_QUEUE_SHARDS``, shared/keys.py) each shard has its own outbox, in its slot (the
scripts that fill it run there), and its notices come on its own wake-up channel: a sender takes from every
shard's outbox in turn, each reply handled in its task's shard.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.connections import ArqRedis
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from redis.exceptions import RedisError

from shared import keys, tenancy
from shared.scripts import Scripts
from shared.serialization import dumps, loads
from shared.status import is_final, task_view
from shared.waiting import wait_set
from worker.engine.outcomes import error_payload
from worker.outputs import ResultTooLarge, check_result

logger = logging.getLogger("relay.bridge")

HOLD_SECONDS = 30.0  # an entry taken by a sender is hidden from the others this long
RETRY_SECONDS = 5.0  # a failed send is tried again after this long
BATCH = 32
POLL_SECONDS = 10.0  # the outbox is also checked this often, in case a notice was missed


class ReplySender:
    """Sends due replies from the outbox (one per bridge worker)."""

    def __init__(self, pool: ArqRedis, client: ServiceBusClient, queue_name: str, max_result_bytes: int) -> None:
        self._pool = pool
        self._max_result_bytes = max_result_bytes
        self._client = client
        self._queue_name = queue_name
        self._scripts = Scripts(pool)
        self.wake = asyncio.Event()
        self.sent = 0
        self.failures = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Send until ``stopping`` is set."""
        while not stopping.is_set():
            self.wake.clear()
            try:
                sent_all = await self.send_due()
            except (RedisError, OSError) as exc:
                logger.warning("reply outbox unreadable (%s); trying again shortly", exc)
                sent_all = True
            if sent_all:
                await wait_set(self.wake, POLL_SECONDS)

    async def send_due(self) -> bool:
        """Send one batch of due replies from each shard's outbox; True when none had more than one batch due."""
        sent_all = True
        for shard in keys.shards():
            with keys.on_shard(shard):  # its outbox, its script and its tasks' keys are in its slot
                sent_all = await self._send_due(keys.reply_outbox(self._queue_name)) and sent_all
        return sent_all

    async def _send_due(self, outbox: str) -> bool:
        taken = await self._scripts.outbox(keys=[outbox], args=[0, BATCH, int(HOLD_SECONDS * 1000)])
        for task_id_raw, raw_request, held in zip(taken[0::3], taken[1::3], taken[2::3], strict=True):
            await self._send_one(outbox, task_id_raw.decode(), raw_request, int(held))
        return len(taken) // 3 < BATCH

    async def _send_one(self, outbox: str, task_id: str, raw_request: bytes | None, held: int) -> None:
        view = await task_view(self._pool, self._queue_name, task_id)
        if view is not None and not is_final(view):
            await self._settle(outbox, task_id, held)  # nothing to say yet: a retry re-adds it at its end
            return
        if raw_request is None or view is None:
            # Both live RELAY_RESULT_TTL_SECONDS: the reply could not be sent for longer than that.
            lost = {"reply request": raw_request is None, "record": view is None}
            missing = " and ".join(what for what, gone in lost.items() if gone)
            logger.warning("reply for task %s dropped: its %s expired before it could be sent", task_id, missing)
            await self._settle(outbox, task_id, held)
            return
        request = loads(raw_request)
        try:
            await self._send(task_id, request, view)
        except Exception as exc:  # the SDK's errors are many; every one means "not sent yet"
            self.failures += 1
            logger.warning("reply for task %s not sent (%s); retrying in %gs", task_id, exc, RETRY_SECONDS)
            await self._settle(outbox, task_id, held, retry_in_ms=int(RETRY_SECONDS * 1000))
            return
        self.sent += 1
        await self._settle(outbox, task_id, held)

    async def _settle(self, outbox: str, task_id: str, held: int, retry_in_ms: int | None = None) -> None:
        """Remove the entry taken at ``held`` (or hold it ``retry_in_ms`` more, on Redis's clock), unless the task
        ended again since and was added again: that entry stays, for the reply of its new end."""
        delay = "" if retry_in_ms is None else retry_in_ms
        await self._scripts.outbox(keys=[outbox], args=["settle", task_id, held, delay])

    async def _send(self, task_id: str, request: dict[str, Any], view: dict[str, Any]) -> None:
        state = view["state"]
        reply = ServiceBusMessage(
            reply_body(tenancy.client_id(task_id), view, self._max_result_bytes),  # the id the sender chose
            correlation_id=request.get("message_id"),
            session_id=request.get("session_id"),
            content_type="application/json",
            application_properties={"relay_state": state},
        )
        async with self._client.get_queue_sender(request["reply_to"]) as sender:
            await sender.send_messages(reply)


def reply_body(task_id: str, view: dict[str, Any], max_result_bytes: int) -> bytes:
    """The reply to a task's request: its final state and its result or error. A result over
    ``max_result_bytes`` (stored by a worker with a higher limit, or from before the limit) is not sent: the
    reply says ``ResultTooLarge`` instead, and the result stays readable with ``GET /tasks/{id}``."""
    state = view["state"]
    outcome: dict[str, Any] = {"task_id": task_id, "state": state}
    if state != "succeeded":
        outcome["error"] = view["error"]
        return dumps(outcome)
    encoded = dumps(view["result"])
    try:
        check_result(encoded, max_result_bytes)
    except ResultTooLarge as exc:
        logger.warning("reply for task %s sent without its result: %s", task_id, exc)
        outcome["result"] = None
        outcome["error"] = error_payload(exc, f"{exc} The result is kept: GET /tasks/{task_id} returns it.")
        return dumps(outcome)
    outcome["result"] = view["result"]
    return dumps(outcome)
