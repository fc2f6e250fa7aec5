"""One Redis pub/sub connection per API process, fanned out in-process to every stream that follows a task.

A channel is subscribed while at least one local stream follows its task and unsubscribed the moment
the last one leaves. Each stream has a bounded queue: a stream too slow to keep up is flagged instead
of growing memory, and re-reads what it missed from the task's event log (replay is always there).
The process's own *inbox* channel (``shared.keys``, "Inboxes") is subscribed once, at start: the tasks this
process submits with a stream name it in their records, and their events arrive there, routed to the stream
by task id, with no subscription per task. A connection that goes silent without being closed is found by a
probe of its own (``shared.pubsub_liveness``) and replaced, as a lost one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import keys
from shared.events import EventHead, decode_head, unpack
from shared.pubsub_liveness import PROBE, Liveness
from shared.waiting import cancel_and_wait

logger = logging.getLogger("relay.api.hub")
PROBE_AFTER_SECONDS = 5.0  # a probe after this long with nothing read (shared.pubsub_liveness) ...
PROBE_ANSWER_SECONDS = 5.0  # ... and the connection is dropped if it is not answered within this


class SubscribeUnconfirmed(RedisTimeoutError):
    """Redis did not confirm a subscription in time: the stream cannot start (a 503, ``shared.redis_errors``), and
    the hub probes its connection at once."""


class SilentConnection(ConnectionError):
    """The hub's connection did not answer its probe: dropped, and made again with every subscription."""


class Signal(Enum):
    """Out-of-band notices a stream receives through its queue."""

    RESYNC = "resync"  # events may have been missed: re-read the log
    DRAIN = "drain"  # the process is shutting down


@dataclass(frozen=True, slots=True)
class Delivery:
    """A live event: its routing head and its raw JSON, passed through untouched."""

    head: EventHead
    raw: bytes


Item = Delivery | Signal


class Subscription:
    """One stream's view of a channel."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.draining = False  # kept as a flag too: a full queue must not lose it

    def deliver(self, item: Item) -> None:
        """Never blocks the hub: a full queue marks the stream for a resync from the log instead."""
        if item is Signal.DRAIN:
            self.draining = True
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


@dataclass
class _Channel:
    subscriptions: set[Subscription] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class PubSubHub:
    """Shared subscriber for all streams of one process (see module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        queue_size: int = 256,
        subscribe_timeout: float = 5.0,
        inbox: str | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self._pubsub = redis.pubsub()
        self._liveness = liveness or Liveness(PROBE_AFTER_SECONDS, PROBE_ANSWER_SECONDS)
        self._channels: dict[str, _Channel] = {}
        self._inbox_name = inbox
        self._inbox_acked: asyncio.Event | None = None  # set while the first SUBSCRIBE of the inbox is unanswered
        self._routes: dict[str, set[Subscription]] = {}  # task id -> the streams its inbox events go to
        # The inbox's name once Redis confirmed its subscription (None before: submits then subscribe per task).
        self.inbox: str | None = None
        # Redis answers SUBSCRIBEs in order, so the oldest unanswered one per name owns the next ack.
        self._awaiting_ack: dict[str, deque[_Channel]] = {}
        self._queue_size = queue_size
        self._subscribe_timeout = subscribe_timeout
        self._reader: asyncio.Task[None] | None = None
        self.draining = False

    @property
    def stream_count(self) -> int:
        """Streams following a task right now in this process."""
        return sum(len(c.subscriptions) for c in self._channels.values()) + sum(map(len, self._routes.values()))

    @property
    def channel_count(self) -> int:
        """Channels this process is subscribed to."""
        return len(self._channels)

    async def start(self) -> None:
        """Open the shared connection, start reading it, and subscribe the inbox (safe to call again after a
        failure: the connection is opened again and what is done stays done)."""
        await self._pubsub.connect()  # type: ignore[no-untyped-call]
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_forever(), name="relay-pubsub-hub")
        if self._inbox_name is not None and self.inbox is None:
            acked = self._inbox_acked = asyncio.Event()
            await self._pubsub.subscribe(self._inbox_name)
            async with asyncio.timeout(self._subscribe_timeout):
                await acked.wait()
            self.inbox = self._inbox_name

    async def close(self) -> None:
        """Stop reading and close the shared connection."""
        if self._reader is not None:
            await cancel_and_wait(self._reader)
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    def drain(self) -> None:
        """Tell every open stream that the process is stopping."""
        self.draining = True
        for sub in self._all_subscriptions():
            sub.deliver(Signal.DRAIN)

    def _all_subscriptions(self) -> list[Subscription]:
        subs = [sub for channel in self._channels.values() for sub in channel.subscriptions]
        return subs + [sub for routed in self._routes.values() for sub in routed]

    @contextlib.contextmanager
    def follow_inbox(self, task_id: str) -> Iterator[Subscription]:
        """Take the events of ``task_id`` that arrive on this process's inbox (its record must name the inbox,
        ``inbox``): no round trip, so call it before the enqueue, as ``subscribe`` is."""
        sub = Subscription(self._queue_size)
        self._routes.setdefault(task_id, set()).add(sub)
        try:
            if self.draining:
                sub.deliver(Signal.DRAIN)
            yield sub
        finally:
            routed = self._routes.get(task_id)
            if routed is not None:
                routed.discard(sub)
                if not routed:
                    del self._routes[task_id]

    def subscribe(self, task_id: str) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """Follow a task's live events; returns once Redis confirmed the subscription, so nothing
        published afterwards is missed."""
        return self.subscribe_channel(keys.events_channel(task_id))

    @contextlib.asynccontextmanager
    async def subscribe_channel(self, name: str) -> AsyncIterator[Subscription]:
        """Follow the live events of channel ``name`` (a task's, or a workflow's: ``keys.flow_events``)."""
        sub = Subscription(self._queue_size)
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel()
            self._awaiting_ack.setdefault(name, deque()).append(channel)
            channel.subscriptions.add(sub)
            try:
                await self._pubsub.subscribe(name)
            except BaseException:
                self._no_ack_awaited(name, channel)  # else the channel's next subscriber would take this one's ack
                self._leave(name, channel, sub)
                raise
        else:
            channel.subscriptions.add(sub)
        try:
            await self._confirmed(name, channel)
            if self.draining:
                sub.deliver(Signal.DRAIN)
            yield sub
        finally:
            await self._unsubscribe_if_last(name, channel, sub)

    async def _confirmed(self, name: str, channel: _Channel) -> None:
        """Wait for Redis to confirm ``channel``'s subscription; ``SubscribeUnconfirmed`` when it does not in time
        (a silent connection, most likely: the hub probes it now rather than after a quiet while)."""
        try:
            async with asyncio.timeout(self._subscribe_timeout):  # not wait_for: it can lose a cancel (3.11)
                await channel.ready.wait()
        except TimeoutError:
            self._liveness.suspect()
            raise SubscribeUnconfirmed(f"no confirmation of the subscription to {name} from Redis") from None

    def _no_ack_awaited(self, name: str, channel: _Channel) -> None:
        """``channel``'s SUBSCRIBE failed, so no confirmation comes for it; and when redis-py reconnects inside
        a read, no error reaches ``_read_forever`` to clear the queue (``_after_reconnect``)."""
        pending = self._awaiting_ack.get(name)
        if pending is not None and channel in pending:
            pending.remove(channel)
            if not pending:
                del self._awaiting_ack[name]

    def _leave(self, name: str, channel: _Channel, sub: Subscription) -> bool:
        channel.subscriptions.discard(sub)
        if channel.subscriptions or self._channels.get(name) is not channel:
            return False
        del self._channels[name]
        return True

    async def _unsubscribe_if_last(self, name: str, channel: _Channel, sub: Subscription) -> None:
        if self._leave(name, channel, sub):
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(name)

    async def _read_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
                if message is None:
                    await self._probe()
                    continue
            except (RedisError, OSError) as exc:
                logger.warning("pub/sub connection lost (%s); reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._after_reconnect()
                continue
            self._liveness.heard()
            if message["type"] != "pong":  # the probe's answer (or redis-py's health check's)
                self._dispatch(message)

    async def _probe(self) -> None:
        """After a quiet while, PING the connection; drop it if that went unanswered (``shared.pubsub_liveness``):
        the next read connects again and subscribes every channel again."""
        if self._liveness.dead():
            self._liveness.heard()  # the next connection starts afresh
            if self._pubsub.connection is not None:
                await self._pubsub.connection.disconnect(nowait=True)  # not wait for a peer that is gone
            raise SilentConnection("no answer to a PING: the connection went silent")
        if self._liveness.probe_due():
            self._liveness.probe_sent()
            await self._pubsub.ping(PROBE)

    def _after_reconnect(self) -> None:
        """redis-py re-subscribes every channel on reconnect; whatever was published meanwhile is in the log."""
        for pending in self._awaiting_ack.values():
            for channel in pending:
                channel.ready.set()
        self._awaiting_ack.clear()
        if self._inbox_acked is not None:
            self._inbox_acked.set()
        for sub in self._all_subscriptions():
            sub.deliver(Signal.RESYNC)

    def _route_inbox(self, data: bytes) -> None:
        """Hand each event of an inbox message to the streams of its task."""
        for raw in unpack(data):
            try:
                head = decode_head(raw)
            except ValueError:
                logger.warning("ignoring a malformed event on the inbox")
                continue
            for sub in self._routes.get(head.task_id, ()):
                sub.deliver(Delivery(head, raw))

    def _inbox_subscribed(self) -> None:
        """The inbox's first confirmation starts it; a later one (a re-subscribe after a reconnect) may have
        missed messages: its streams re-read their logs."""
        if self._inbox_acked is not None and not self._inbox_acked.is_set():
            self._inbox_acked.set()
            return
        for routed in self._routes.values():
            for sub in routed:
                sub.deliver(Signal.RESYNC)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        name = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        if name == self._inbox_name:
            if kind == "message":
                self._route_inbox(message["data"])
            elif kind == "subscribe":
                self._inbox_subscribed()
            return
        if kind == "message":
            channel = self._channels.get(name)
            if channel is None:
                return
            try:  # a message carries the events of one commit, one per line
                deliveries = [Delivery(decode_head(raw), raw) for raw in unpack(message["data"])]
            except ValueError:
                logger.warning("ignoring a malformed event on %s", name)
                return
            for sub in channel.subscriptions:
                for delivery in deliveries:
                    sub.deliver(delivery)
        elif kind == "subscribe":
            pending = self._awaiting_ack.get(name)
            if pending:
                pending.popleft().ready.set()
                if not pending:
                    del self._awaiting_ack[name]
            elif (channel := self._channels.get(name)) is not None:
                for sub in channel.subscriptions:  # a re-subscribe after a reconnect
                    sub.deliver(Signal.RESYNC)
