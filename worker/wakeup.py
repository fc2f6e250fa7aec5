"""Wake-up notices: how idle workers learn of new work without polling for it.

Enqueues, re-queues, retries and aborts publish on ``relay:wakeup:<queue>`` (from the same Lua script as the
change itself): ``j`` (a job is due now), ``d<ms>`` (one falls due then), ``w<token>`` and ``e<ms>|<token>``
(the same, for the registered worker of that token alone to claim: shared/keys.py "Named claims"; the worker
keeps the promise of a later one, ``worker.engine.promises``), ``a<id>`` (abort that running task),
``c<id>`` (a child of that task ended: its parent may be waiting) or ``o`` (a Service Bus reply is due: bridge
workers send it). Job notices of a named queue other than ``default`` go to that queue's own channel
(``keys.queue_channel``), heard only by the workers serving it.
The engine's timer still fires every ``RELAY_POLL_DELAY_SECONDS``, so a lost notice costs one poll delay,
never a job; after the subscription drops and comes back (on a cluster, also when the channel's slot moved:
``shared.sharded_pubsub``), the worker claims once, in case it missed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from shared import keys
from shared.waiting import cancel_and_wait
from worker.engine.engine import Engine
from worker.engine.promises import tell_all

logger = logging.getLogger("relay.worker")


class WakeupListener:
    """Subscribes to the queue's wake-up channels and tells the engine: with several shards
    (``RELAY_QUEUE_SHARDS``), each shard's, on a subscription of its own (its channels are in its slot)."""

    def __init__(self, redis: Redis, queue_name: str, engine: Engine, queues: list[str] | None = None) -> None:
        self._subscriptions: list[tuple[PubSub, list[str]]] = []
        for shard in keys.shards():
            with keys.on_shard(shard):
                named = [keys.queue_channel(queue_name, q) for q in queues or []]
                channels = list(dict.fromkeys([keys.wakeup_channel(queue_name), *named]))
                # Subscribe confirmations are read: a channel confirmed again was subscribed again after a reconnect.
                self._subscriptions.append((redis.pubsub(), channels))
        self._default_channel = keys.wakeup_channel(queue_name).encode()
        self._engine = engine
        self._tasks: list[asyncio.Task[None]] = []
        self._passing_on: set[asyncio.Task[None]] = set()
        self.notices = 0
        self.on_outbox: asyncio.Event | None = None

    async def start(self) -> None:
        for shard, (pubsub, channels) in enumerate(self._subscriptions):
            await pubsub.subscribe(*channels)
            self._tasks.append(asyncio.create_task(self._listen(pubsub, shard), name="relay-wakeup"))

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        for pubsub, _ in self._subscriptions:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def handle(self, notice: bytes, shard: int = 0, channel: bytes | None = None) -> None:
        """Route one notice (of ``shard``'s channel ``channel``) to the engine."""
        self.notices += 1
        kind, rest = notice[:1], notice[1:]
        if kind == b"d":
            self._engine.note_due(float(rest), shard)
        elif kind == b"a":
            self._engine.note_abort(rest.decode())
        elif kind == b"c":
            self._engine.note_child(rest.decode())
        elif kind == b"o":
            if self.on_outbox is not None:
                self.on_outbox.set()
        elif kind in (b"w", b"e"):
            self._named(kind, rest, shard, channel or self._default_channel)
        else:
            self._engine.note_job(shard)

    def _named(self, kind: bytes, rest: bytes, shard: int, channel: bytes) -> None:
        """A job named for one worker (shared/keys.py "Named claims"): ``w<token>`` due now, ``e<due>|<token>``
        due then. Only that worker claims; the others' registrations stand, and a claim of theirs would take
        nothing. Named for a job due now that it cannot take (stopping, or its slots filled since it registered),
        or for a later one as it stops, this worker tells every worker instead, rather than leave the job to a
        poll; any other it keeps (``worker.engine.promises``) until its claim, so a stop before then tells them."""
        due_ms: float | None = None
        if kind == b"e":
            due_text, _, rest = rest.partition(b"|")
            due_ms = float(due_text)
        if rest.decode() != self._engine.token:
            return
        if due_ms is not None and not self._engine.shutting_down:
            self._engine.note_promised(due_ms, channel, shard)  # busy now, it may be free by then
        elif self._engine.can_claim:
            self._engine.note_named_job(channel, shard)
        else:
            notice = b"j" if due_ms is None else b"d%d" % due_ms
            logger.debug("named for a job it cannot take now: telling every worker")
            engine = self._engine
            notices = [(channel, notice)]  # on the channel's own shard: shard 0's cannot publish it
            telling = tell_all(engine.scripts, engine.settings.queue_name, notices, shard_of={channel: shard})
            task = asyncio.create_task(telling, name="relay-wakeup-pass-on")
            self._passing_on.add(task)
            task.add_done_callback(self._passing_on.discard)

    async def _listen(self, pubsub: PubSub, shard: int) -> None:
        """Read ``shard``'s notices. A loss is seen two ways: an error reaching this loop, or a channel's
        subscription confirmed a second time, since redis-py reconnects and subscribes again inside
        ``get_message`` when the server drops the connection (``CLIENT KILL``, a proxy's idle cut, a restart),
        with no error to see. Either way the worker claims once."""
        lost = False
        confirmed: set[bytes] = set()
        while True:
            try:
                message = await pubsub.get_message(timeout=5.0)
            except (RedisError, OSError) as exc:  # the timer still polls; just retry the channel
                if not lost:
                    logger.warning("wake-up channel lost (%s); polling on the timer meanwhile", exc)
                lost = True
                await asyncio.sleep(1.0)
                continue
            if lost:
                lost = False
                logger.info("wake-up channel back")
                self._engine.catch_up(shard)  # a notice may have been missed meanwhile
            if message is None:
                continue
            if message["type"] == "subscribe":
                if message["channel"] in confirmed:
                    logger.info("wake-up channel subscribed again after a reconnect")
                    self._engine.catch_up(shard)
                confirmed.add(message["channel"])
            elif message["type"] == "message":
                try:
                    self.handle(message["data"], shard, message["channel"])
                except ValueError:
                    logger.warning("ignoring a malformed wake-up notice %r", message["data"][:80])
