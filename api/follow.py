"""Following one task's events: replay from the log, then live from the hub, with no gap and no repeat.

The order is what makes it exact: subscribe (and wait for Redis to confirm), then replay the log, then
take live events whose sequence number is above the last one sent. Anything the live path may have
missed (a slow reader's overflow, a reconnect, a gap in numbers) is re-read from the log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from redis.exceptions import RedisError

from api.hub import Delivery, PubSubHub, Signal
from shared.events import FINAL_TYPE, EventLog, decode_head


class FrameKind(Enum):
    """What a stream sends."""

    EVENT = "event"
    HEARTBEAT = "heartbeat"
    RECONNECT = "reconnect"


@dataclass(frozen=True, slots=True)
class Frame:
    """One unit of output; ``raw`` is the event's JSON for EVENT frames."""

    kind: FrameKind
    seq: int = 0
    type: str = ""
    raw: bytes = b""


# Called on idle heartbeats: should publish a missing ``end`` if the task finished without one
# (a worker killed between storing the result and publishing it). Returns True if it did.
RepairEnd = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class FollowOptions:
    """Timings of a stream."""

    heartbeat_seconds: float
    drain_seconds: float


async def follow(
    hub: PubSubHub, log: EventLog, task_id: str, after_seq: int, options: FollowOptions, repair_end: RepairEnd
) -> AsyncIterator[Frame]:
    """Yield the task's events after ``after_seq`` until its ``end`` event (or a reconnect hint on drain)."""
    last = after_seq
    try:
        async for frame in _follow(hub, log, task_id, after_seq, options, repair_end):
            last = frame.seq if frame.kind is FrameKind.EVENT else last
            yield frame
    except (RedisError, OSError, TimeoutError):
        # Redis went away (or stalled) mid-stream: hand the client a resume point rather than a cut connection.
        yield Frame(FrameKind.RECONNECT, last)


async def _follow(
    hub: PubSubHub, log: EventLog, task_id: str, after_seq: int, options: FollowOptions, repair_end: RepairEnd
) -> AsyncIterator[Frame]:
    last = after_seq
    drain_deadline: float | None = None
    async with hub.subscribe(task_id) as sub:
        needs_replay = True
        while True:
            if needs_replay:
                needs_replay = False
                sub.overflowed = False
                async for seq, raw in _replay(log, task_id, last):
                    last = seq
                    head = decode_head(raw)
                    yield Frame(FrameKind.EVENT, seq, head.type, raw)
                    if head.type == FINAL_TYPE:
                        return
            item = await _next_item(sub.queue, options.heartbeat_seconds, drain_deadline)
            if item is None:
                if drain_deadline is not None and time.monotonic() >= drain_deadline:
                    yield Frame(FrameKind.RECONNECT, last)
                    return
                yield Frame(FrameKind.HEARTBEAT)
                needs_replay = await repair_end()
                continue
            if item is Signal.DRAIN:
                drain_deadline = drain_deadline or time.monotonic() + options.drain_seconds
            elif item is Signal.RESYNC:
                needs_replay = True
            elif isinstance(item, Delivery) and item.head.seq > last:
                if item.head.seq != last + 1:
                    needs_replay = True  # a gap: the log has what is missing, and this event too
                else:
                    last = item.head.seq
                    yield Frame(FrameKind.EVENT, last, item.head.type, item.raw)
                    if item.head.type == FINAL_TYPE:
                        return
            needs_replay = needs_replay or sub.overflowed


REPLAY_PAGE = 100


async def _replay(log: EventLog, task_id: str, after_seq: int) -> AsyncIterator[tuple[int, bytes]]:
    """The stored events after ``after_seq``, a page at a time: a client that reads slowly holds one
    page in memory, not the task's whole history."""
    while True:
        page = await log.read_after(task_id, after_seq, count=REPLAY_PAGE)
        for event in page:
            yield event
        if len(page) < REPLAY_PAGE:
            return
        after_seq = page[-1][0]


async def _next_item(
    queue: asyncio.Queue[Delivery | Signal], heartbeat: float, drain_deadline: float | None
) -> Delivery | Signal | None:
    """The next queued item, or None when it is time for a heartbeat (or the drain deadline passed)."""
    if not queue.empty():  # the hot path under load: no timer, no task
        return queue.get_nowait()
    timeout = heartbeat
    if drain_deadline is not None:
        timeout = max(0.0, min(timeout, drain_deadline - time.monotonic()))
    try:
        async with asyncio.timeout(timeout):  # unlike wait_for, no Task per call
            return await queue.get()
    except TimeoutError:
        return None
