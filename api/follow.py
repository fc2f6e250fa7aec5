"""Following one task's events: replay from the log, then live from the hub, with no gap and no repeat.

The order is what makes it exact: subscribe (and wait for Redis to confirm), then replay the log, then take
live events whose sequence number is above the last one sent. Anything the live path may have missed (a slow
reader's overflow, a reconnect, a jump in numbers) is re-read from the log. Events the log no longer has
(capped, or expired during a long silence) are announced by one ``gap`` event naming the missing numbers,
never skipped silently. A stream ends after an ``end`` event that is the last one in the log (a retried task
logs more events after an earlier ``end``), or, with nothing sent, once the log ends with an ``end`` the
client's position is already past (a stale resume point): what a ``204`` says at connect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from redis.exceptions import RedisError

from api.hub import Delivery, PubSubHub, Signal, Subscription
from shared.events import FINAL_TYPE, EventLog, EventType, decode_head, synthetic
from shared.waiting import raise_lost_cancel


class FrameKind(Enum):
    """What a stream sends."""

    EVENT = "event"
    HEARTBEAT = "heartbeat"
    RECONNECT = "reconnect"


@dataclass(frozen=True, slots=True)
class Frame:
    """One unit of output; ``raw`` is the event's JSON for EVENT frames; ``ends`` marks the ``end`` that ends
    the stream (the last event of the log when it was sent)."""

    kind: FrameKind
    seq: int = 0
    type: str = ""
    raw: bytes = b""
    ends: bool = False


# Called on idle heartbeats: publishes a missing ``end`` if the task ended (or vanished) without one in its
# log. True when the log now ends with ``end`` (so a re-read will find it).
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
    async with hub.subscribe_channel(log.channel(task_id)) as sub:
        async for frame in follow_subscribed(sub, log, task_id, after_seq, options, repair_end):
            yield frame


async def follow_subscribed(
    sub: Subscription,
    log: EventLog,
    task_id: str,
    after_seq: int,
    options: FollowOptions,
    repair_end: RepairEnd,
    replay_first: bool = True,
    final_type: str = FINAL_TYPE,
) -> AsyncIterator[Frame]:
    """``follow`` on a subscription the caller opened (``POST /tasks`` subscribes before it enqueues, so a
    task it has just created needs no replay: nothing can have been published before the subscription).
    A workflow's log (``api.routes.workflows``) ends with ``final_type`` ``workflow_end`` instead of ``end``."""
    last = after_seq
    try:
        async for frame in _follow(sub, log, task_id, after_seq, options, repair_end, replay_first, final_type):
            last = frame.seq if frame.kind is FrameKind.EVENT else last
            yield frame
    except (RedisError, OSError, TimeoutError):
        # Redis went away (or stalled) mid-stream: hand the client a resume point rather than a cut connection.
        yield Frame(FrameKind.RECONNECT, last)


async def _follow(
    sub: Subscription,
    log: EventLog,
    task_id: str,
    after_seq: int,
    options: FollowOptions,
    repair_end: RepairEnd,
    replay_first: bool,
    final_type: str,
) -> AsyncIterator[Frame]:
    last = after_seq
    drain_deadline: float | None = None

    def drained() -> bool:
        """Whether the drain's time is up (it starts at the flag, not at an item: a full queue may have lost
        that). Checked before every item and replayed frame: a busy task's stream always has one waiting."""
        nonlocal drain_deadline
        if sub.draining and drain_deadline is None:
            drain_deadline = time.monotonic() + options.drain_seconds
        return drain_deadline is not None and time.monotonic() >= drain_deadline

    needs_replay = replay_first
    while True:
        if needs_replay:
            needs_replay = False
            sub.overflowed = False
            replayed = False
            async for frame in _replay(log, task_id, last, final_type):
                last, replayed = frame.seq, True
                yield frame
                if frame.ends:
                    return
                if drained():
                    yield Frame(FrameKind.RECONNECT, last)
                    return
            if not replayed and await _ended_before(log, task_id, last, final_type):
                return
        if drained():
            yield Frame(FrameKind.RECONNECT, last)
            return
        item = await _next_item(sub.queue, options.heartbeat_seconds, drain_deadline)
        if item is None:
            if drained():
                yield Frame(FrameKind.RECONNECT, last)
                return
            yield Frame(FrameKind.HEARTBEAT)
            needs_replay = await repair_end()
            continue
        if item is Signal.RESYNC:
            needs_replay = True
        elif isinstance(item, Delivery) and item.head.seq <= last and item.head.type == final_type:
            needs_replay = True  # the task ended below the client's position: the replay sees whether for good
        elif isinstance(item, Delivery) and item.head.seq > last:
            if item.head.seq != last + 1:
                needs_replay = True  # a jump: the log has what is missing (or says it is gone), and this one too
            else:
                last = item.head.seq
                ends = item.head.type == final_type
                yield Frame(FrameKind.EVENT, last, item.head.type, item.raw, ends)
                if ends:
                    return
        needs_replay = needs_replay or sub.overflowed


async def _ended_before(log: EventLog, task_id: str, position: int, final_type: str) -> bool:
    """Whether the log's last event is an ``end`` at or before ``position``: nothing more will come."""
    newest = await log.last(task_id)
    return newest is not None and newest[0] <= position and decode_head(newest[1]).type == final_type


REPLAY_PAGE = 100


async def _replay(log: EventLog, task_id: str, after_seq: int, final_type: str) -> AsyncIterator[Frame]:
    """The stored events after ``after_seq``, a page at a time (a slow reader holds one page, not the task's
    whole history). A ``gap`` frame stands for numbers the log no longer has. Only an ``end`` that is the last
    stored event ends the stream; an earlier one (before a retry) is passed on and the stream goes on."""
    expected = after_seq + 1
    page = await log.read_after(task_id, after_seq, count=REPLAY_PAGE)
    while page:
        following = await log.read_after(task_id, page[-1][0], count=REPLAY_PAGE) if len(page) >= REPLAY_PAGE else []
        for index, (seq, raw) in enumerate(page):
            if seq > expected:
                data = {"first_seq": expected, "last_seq": seq - 1}
                gap = synthetic(seq - 1, task_id, EventType.GAP, data)
                yield Frame(FrameKind.EVENT, seq - 1, EventType.GAP.value, gap)
            expected = seq + 1
            kind = decode_head(raw).type
            is_last = index == len(page) - 1 and not following
            yield Frame(FrameKind.EVENT, seq, kind, raw, ends=kind == final_type and is_last)
        page = following


async def _next_item(
    queue: asyncio.Queue[Delivery | Signal], heartbeat: float, drain_deadline: float | None
) -> Delivery | Signal | None:
    """The next queued item, or None when it is time for a heartbeat (or the drain deadline passed).
    A client that hung up while the stream read Redis (the replay, a repair) may have had its cancel lost
    there (see ``shared.waiting``): it is raised here, before a wait that only the next heartbeat, whose
    write fails, would end (15 s by default, holding the stream's slot and memory meanwhile)."""
    raise_lost_cancel()
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
