"""The bridge loop: receive in peek-lock, enqueue, then settle. Nothing is settled before it is safe.

Per message: parse it (poison -> dead-letter with a reason), enqueue its task with the message id as task id
and its reply request in the same atomic step (a redelivery enqueues nothing new and redirects nothing), and
only then complete it. A transient failure (Redis down, queue full) is retried for ``servicebus_retry_seconds``
while the lock is renewed, then the message is abandoned for Service Bus to redeliver, and receiving
stops until what failed is over (Redis accepts writes again; the full queue has room), so an outage costs each
message at most one delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from arq.connections import ArqRedis
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient, ServiceBusReceiver
from redis.exceptions import RedisError

from shared import keys, tracing
from shared.durability import NotReplicated, replicas_confirm
from shared.enqueue import Enqueuer, prepare
from shared.errors import IdConflict, InvalidArguments, InvalidOptions, QueueFull, SubmissionError, UnknownTask
from shared.limits import ArgsTooLarge, check_args_size
from shared.redis import check_writable, connect_fail_fast
from shared.redis_errors import REDIS_FAILURES
from shared.settings import Settings
from shared.waiting import wait_set
from worker.bridge.client import service_bus_client, task_receiver
from worker.bridge.messages import DESCRIPTION_LIMIT, DeadLetterReason, Poison, parse, reply_request, trace_context
from worker.bridge.replies import ReplySender
from worker.registry import TaskRegistry

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics

logger = logging.getLogger("relay.bridge")

# Every Redis failure (shared.redis_errors), a full queue, and replicas that did not confirm in time: abandon and
# wait until it is over.
TRANSIENT = (*REDIS_FAILURES, QueueFull, NotReplicated)
STOP_SECONDS = 10.0  # in-hand messages get this long to finish at shutdown, then are abandoned
Settlement = Callable[[ServiceBusReceiver, ServiceBusReceivedMessage], Awaitable[None]]
_POISON: dict[type[SubmissionError], str] = {
    UnknownTask: DeadLetterReason.UNKNOWN_TASK,
    InvalidArguments: DeadLetterReason.INVALID_ARGUMENTS,
    InvalidOptions: DeadLetterReason.INVALID_SCHEMA,
    IdConflict: DeadLetterReason.ID_CONFLICT,
    ArgsTooLarge: DeadLetterReason.ARGS_TOO_LARGE,
}


class ServiceBusBridge:
    """Runs inside a worker process (see ``worker.setup``): one receiver, bounded concurrency."""

    def __init__(
        self,
        settings: Settings,
        pool: ArqRedis,
        registry: TaskRegistry,
        client: ServiceBusClient,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._pool = pool
        self._registry = registry
        self.client = client
        self.replies = ReplySender(pool, client, settings.queue_name, settings.max_result_bytes)
        self._enqueuer = Enqueuer(pool, settings)
        self._entity = settings.servicebus_queue or f"{settings.servicebus_topic}/{settings.servicebus_subscription}"
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._replies_task: asyncio.Task[None] | None = None
        self._redis_down = asyncio.Event()
        self._full: QueueFull | None = None  # the refusal of a queue that was full: receive once it has room
        self._lagging: NotReplicated | None = None  # replicas did not confirm it in time: receive once they do

    @classmethod
    async def start(
        cls, settings: Settings, registry: TaskRegistry, metrics: WorkerMetrics | None = None
    ) -> ServiceBusBridge:
        """Connect and start receiving in the background. The bridge has its own Redis client, one that
        fails fast, so a Redis outage turns into an abandon rather than a long wait under a lock."""
        pool = await connect_fail_fast(settings)
        bridge = cls(settings, pool, registry, service_bus_client(settings), metrics)
        bridge._loop_task = asyncio.create_task(bridge._run(), name="relay-servicebus-bridge")
        bridge._replies_task = asyncio.create_task(bridge.replies.run(bridge._stopping), name="relay-replies")
        return bridge

    async def stop(self) -> None:
        """Stop receiving; finish what is in hand (or abandon it for immediate redelivery); close."""
        self._stopping.set()
        self.replies.wake.set()
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(self._loop_task, STOP_SECONDS)
            except (TimeoutError, asyncio.CancelledError):
                logger.warning("in-hand messages did not finish in %gs; they were abandoned", STOP_SECONDS)
        if self._replies_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._replies_task, STOP_SECONDS)
        await self.client.close()
        await self._pool.aclose(close_connection_pool=True)

    async def _run(self) -> None:
        renewer = AutoLockRenewer(max_lock_renewal_duration=self._settings.servicebus_lock_renewal_seconds)
        try:
            while not self._stopping.is_set():
                try:
                    async with task_receiver(self.client, self._settings) as receiver:
                        logger.info("Service Bus bridge receiving")
                        await self._receive_until_stopped(receiver, renewer)
                except Exception:  # the SDK reconnects by itself; this is for what it gives up on
                    logger.exception("Service Bus receiver failed; reconnecting")
                    await self._pause(5.0)
        finally:
            await renewer.close()

    async def _receive_until_stopped(self, receiver: ServiceBusReceiver, renewer: AutoLockRenewer) -> None:
        while not self._stopping.is_set():
            if self._full is not None:
                await self._wait_for_room(self._full)
                continue
            if self._lagging is not None:
                await self._wait_for_replicas(self._lagging)
                continue
            if self._redis_down.is_set():
                await self._wait_for_redis()
                continue
            batch_size = self._settings.servicebus_max_concurrency
            messages = await receiver.receive_messages(max_message_count=batch_size, max_wait_time=1)
            if self._metrics is not None:
                self._metrics.bridge_received.inc(len(messages))
            for message in messages:
                renewer.register(receiver, message)
            if messages:
                await self._handle_batch(receiver, messages)

    async def _handle_batch(self, receiver: ServiceBusReceiver, messages: list[ServiceBusReceivedMessage]) -> None:
        """Enqueue the batch concurrently, then settle one message at a time (concurrent settlements
        on one receiver are slower with the SDK). Whatever a cancellation leaves unsettled is abandoned."""
        settled = 0
        try:
            outcomes = await asyncio.gather(*(self._outcome(message) for message in messages))
            for message, outcome in zip(messages, outcomes, strict=True):
                await _settle(outcome(receiver, message))
                settled += 1
        except asyncio.CancelledError:
            for message in messages[settled:]:
                await _settle(receiver.abandon_message(message))
            raise

    async def _outcome(self, message: ServiceBusReceivedMessage) -> Settlement:
        """How this message must be settled, once its task is enqueued (or cannot be)."""
        try:
            await self._enqueue_with_retry(message)
        except Poison as poison:
            logger.warning("dead-lettering message %s: %s", message.message_id, poison)
            reason, description = poison.reason, poison.description
            if self._metrics is not None:
                self._metrics.bridge_dead_lettered.labels(reason).inc()
            return lambda receiver, m: receiver.dead_letter_message(m, reason=reason, error_description=description)
        except TRANSIENT as exc:
            logger.warning("abandoning message %s after a transient failure: %s", message.message_id, exc)
            if isinstance(exc, QueueFull):
                self._full = exc  # Redis itself is fine: its write probe would let the message straight back
            elif isinstance(exc, NotReplicated):
                self._lagging = exc  # the same: the primary accepts writes, its replicas lag
            else:
                self._redis_down.set()
            if self._metrics is not None:
                self._metrics.bridge_abandoned.inc()
            return lambda receiver, m: receiver.abandon_message(m)
        if self._metrics is not None:
            self._metrics.bridge_completed.inc()
        return lambda receiver, m: receiver.complete_message(m)

    async def _wait_for_redis(self) -> None:
        """Receive nothing while Redis is down: each message received now would only be abandoned
        again, spending its delivery count until Service Bus dead-letters it."""
        logger.warning("Redis is down: the bridge stops receiving until it accepts writes")
        while not self._stopping.is_set():
            try:
                # PING passes under OOM or READONLY, where enqueues fail
                await check_writable(self._pool, keys.schedule(self._settings.queue_name))
            except (RedisError, OSError):
                await self._pause(1.0)
                continue
            logger.info("Redis accepts writes again: the bridge receives again")
            self._redis_down.clear()
            return

    async def _wait_for_room(self, full: QueueFull) -> None:
        """Receive nothing while the queue that refused a task is full: each message received now would only be
        abandoned again (Redis accepts writes all along), spending its delivery count until Service Bus
        dead-letters it. Its count is read where the enqueue read it (the refused task's shard)."""
        logger.warning("queue %r is full: the bridge stops receiving until it has room", full.queue)
        limit = self._settings.max_depth_of(full.queue)
        while not self._stopping.is_set():
            try:
                with keys.on_task_shard(full.task_id):
                    depth = int(await self._pool.hget(keys.depth(self._settings.queue_name), full.queue) or 0)  # type: ignore[misc]
            except (RedisError, OSError):
                depth = limit
            if depth < limit:
                logger.info("queue %r has room again: the bridge receives again", full.queue)
                self._full = None
                return
            await self._pause(1.0)

    async def _wait_for_replicas(self, lag: NotReplicated) -> None:
        """Receive nothing while the replicas do not confirm writes in time (``RELAY_REDIS_WAIT_REPLICAS``): each
        message received now would be enqueued on the primary alone and abandoned again. Asked of the primary
        that refused (the task's shard's: with several, another shard's replicas may be fine)."""
        logger.warning("Redis replicas lag: the bridge stops receiving until they confirm writes again")
        while not self._stopping.is_set():
            try:
                with keys.on_task_shard(lag.task_id):
                    caught_up = await replicas_confirm(self._pool, self._settings)
            except (RedisError, OSError):
                caught_up = False
            if caught_up:
                logger.info("Redis replicas confirm writes again: the bridge receives again")
                self._lagging = None
                return
            await self._pause(1.0)

    async def _pause(self, seconds: float) -> None:
        await wait_set(self._stopping, seconds)

    async def _enqueue_with_retry(self, message: ServiceBusReceivedMessage) -> None:
        submission = parse(message, self._entity)
        deadline = asyncio.get_running_loop().time() + self._settings.servicebus_retry_seconds
        delay = 0.2
        while True:
            try:
                check_args_size(submission, self._settings.max_args_bytes)  # before anything is written
                spec = self._registry.get(submission.task)
                prepared = prepare(
                    spec, self._settings, submission, reply_request(message), self._settings.bridge_tenant or None
                )
                prepared = tracing.with_carrier(prepared, trace_context(message))
                await self._enqueuer.enqueue(prepared)
            except (UnknownTask, InvalidArguments, InvalidOptions, IdConflict, ArgsTooLarge) as exc:
                reason = _POISON[type(exc)]
                raise Poison(reason, str(getattr(exc, "message", exc))[:DESCRIPTION_LIMIT]) from None
            except TRANSIENT:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            return


async def _settle(settlement: Awaitable[None]) -> None:
    """Settle, shielded from cancellation; a failed settlement just means Service Bus redelivers."""
    try:
        await asyncio.shield(settlement)
    except Exception as exc:
        logger.warning("settlement failed (%s); Service Bus will redeliver the message", exc)
