"""The pub/sub hub and the follower against a real Redis: one subscription per channel, exact delivery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from api.follow import FollowOptions, Frame, FrameKind, follow, follow_subscribed
from api.hub import Delivery, PubSubHub, Signal
from shared import keys
from shared.events import EventLog, EventType
from tests.support.events import publish

OPTIONS = FollowOptions(heartbeat_seconds=5, drain_seconds=0.2)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def hub(redis: Redis) -> AsyncIterator[PubSubHub]:
    hub = PubSubHub(redis, queue_size=4)
    await hub.start()
    yield hub
    await hub.close()


def task() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def no_repair() -> bool:
    return False


async def numsub(redis: Redis, task_id: str) -> int:
    channel = keys.events_channel(task_id)
    return int(dict(await redis.pubsub_numsub(channel))[channel.encode()])


async def test_events_get_increasing_sequence_numbers_and_expire(redis: Redis) -> None:
    log = EventLog(redis, max_len=100, ttl_seconds=60)
    task_id = task()
    assert [await publish(redis, task_id, (EventType.PROGRESS, {"i": i}), ttl_seconds=60) for i in range(3)] == [
        1,
        2,
        3,
    ]
    assert [seq for seq, _ in await log.read_after(task_id, 1)] == [2, 3]
    assert 0 < await redis.ttl(keys.events_stream(task_id)) <= 60


async def test_two_streams_share_one_subscription(hub: PubSubHub, redis: Redis) -> None:
    task_id = task()
    async with hub.subscribe(task_id) as first, hub.subscribe(task_id) as second:
        assert await numsub(redis, task_id) == 1
        await publish(redis, task_id, (EventType.STARTED, None))
        got = [await asyncio.wait_for(s.queue.get(), 5) for s in (first, second)]
        assert all(isinstance(g, Delivery) and g.head.seq == 1 for g in got)
    assert hub.channel_count == 0
    # The UNSUBSCRIBE goes out on the hub's own connection: another connection's NUMSUB may come first.
    deadline = asyncio.get_running_loop().time() + 5
    while await numsub(redis, task_id) != 0:
        assert asyncio.get_running_loop().time() < deadline, "the hub never unsubscribed"
        await asyncio.sleep(0.01)


async def test_a_slow_stream_overflows_instead_of_growing(hub: PubSubHub, redis: Redis) -> None:
    task_id = task()
    async with hub.subscribe(task_id) as sub:
        for _ in range(10):
            await publish(redis, task_id, (EventType.PROGRESS, None))
        await publish(redis, task_id, (EventType.END, None))
        await asyncio.wait_for(_until(lambda: sub.overflowed), 5)
        assert sub.queue.qsize() == 4


async def test_a_stream_whose_queue_is_full_still_drains(hub: PubSubHub, redis: Redis) -> None:
    log = EventLog(redis, max_len=100, ttl_seconds=60)
    task_id = task()
    async with hub.subscribe(task_id) as sub:
        for _ in range(4):  # exactly what the queue holds: full, not overflowed
            await publish(redis, task_id, (EventType.PROGRESS, None))
        await asyncio.wait_for(_until(lambda: sub.queue.full()), 5)
        hub.drain()  # finds no room for its signal
        follower = follow_subscribed(sub, log, task_id, 0, OPTIONS, no_repair)
        frames = await asyncio.wait_for(_collect(follower), 3)  # well before the 5 s heartbeat
    assert [f.kind for f in frames] == [FrameKind.EVENT] * 4 + [FrameKind.RECONNECT]


async def _collect(frames: AsyncIterator[Frame]) -> list[Frame]:
    return [frame async for frame in frames]


async def _until(predicate) -> None:  # type: ignore[no-untyped-def]
    while not predicate():
        await asyncio.sleep(0.01)


async def test_follow_replays_then_streams_live_without_gaps_or_repeats(hub: PubSubHub, redis: Redis) -> None:
    log = EventLog(redis, max_len=100, ttl_seconds=60)
    task_id = task()
    for _ in range(3):
        await publish(redis, task_id, (EventType.PROGRESS, None))
    frames: list[Frame] = []

    async def consume() -> None:
        async for frame in follow(hub, log, task_id, 1, OPTIONS, no_repair):
            frames.append(frame)

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(_until(lambda: len(frames) == 2), 5)
    for _ in range(20):  # more than the queue holds: the follower must recover from the log
        await publish(redis, task_id, (EventType.PARTIAL, None))
    await publish(redis, task_id, (EventType.END, None))
    await asyncio.wait_for(consumer, 5)
    assert [f.seq for f in frames] == list(range(2, 25))
    assert frames[-1].type == "end"


async def test_follow_hands_out_a_reconnect_hint_when_draining(hub: PubSubHub, redis: Redis) -> None:
    log = EventLog(redis, max_len=100, ttl_seconds=60)
    task_id = task()
    await publish(redis, task_id, (EventType.STARTED, None))
    frames: list[Frame] = []

    async def consume() -> None:
        async for frame in follow(hub, log, task_id, 0, OPTIONS, no_repair):
            frames.append(frame)

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(_until(lambda: len(frames) == 1), 5)
    hub.drain()
    await asyncio.wait_for(consumer, 5)
    assert [f.kind for f in frames] == [FrameKind.EVENT, FrameKind.RECONNECT]
    assert frames[-1].seq == 1


async def test_a_slow_stream_of_a_busy_task_still_gets_its_reconnect_hint_when_draining(
    hub: PubSubHub, redis: Redis
) -> None:
    """Events come faster than the client reads: the queue always holds one (and overflows, so the log is re-read
    again and again). The drain's deadline was looked at only when the queue was empty, so the stream ran past it
    and was cut at the API's stop with no hint (docs/deploy.md promises one)."""
    log = EventLog(redis, max_len=10_000, ttl_seconds=60)
    task_id = task()
    producing = asyncio.Event()
    producing.set()

    async def produce() -> None:
        while producing.is_set():
            await publish(redis, task_id, (EventType.PROGRESS, None))
            await asyncio.sleep(0.002)

    async def consume() -> list[Frame]:
        frames: list[Frame] = []
        async with hub.subscribe(task_id) as sub:
            async for frame in follow_subscribed(sub, log, task_id, 0, OPTIONS, no_repair):
                frames.append(frame)
                if len(frames) == 20:
                    hub.drain()
                await asyncio.sleep(0.01)  # a slow client
        return frames

    producer = asyncio.create_task(produce())
    try:
        frames = await asyncio.wait_for(consume(), 10)  # the drain lasts 0.2 s; without the fix, for ever
    finally:
        producing.clear()
        await producer
    assert frames[-1].kind is FrameKind.RECONNECT
    assert all(f.kind is FrameKind.EVENT for f in frames[:-1])


async def test_a_subscribe_that_failed_leaves_the_channel_usable(
    hub: PubSubHub, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SUBSCRIBE failed (the pub/sub connection down at that moment): its place in the queue of confirmations
    awaited stayed, so each next subscriber of the channel took the one before's confirmation, waited out the
    timeout for its own (a 503) and left its place in turn: that task could not be followed on this process until
    the connection next dropped."""
    task_id = task()
    real = hub._pubsub.subscribe
    failures = [RedisConnectionError("connection lost")]

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    monkeypatch.setattr(hub._pubsub, "subscribe", failing_once)
    monkeypatch.setattr(hub, "_subscribe_timeout", 2.0)
    with pytest.raises(RedisConnectionError):
        async with hub.subscribe(task_id):
            pass
    for _ in range(2):
        async with hub.subscribe(task_id) as sub:
            await publish(redis, task_id, (EventType.STARTED, None))
            assert isinstance(await asyncio.wait_for(sub.queue.get(), 5), Delivery)


async def test_follow_asks_for_repair_on_idle_heartbeats(hub: PubSubHub, redis: Redis) -> None:
    log = EventLog(redis, max_len=100, ttl_seconds=60)
    task_id = task()

    async def repair() -> bool:
        await publish(redis, task_id, (EventType.END, {"state": "failed"}))
        return True

    options = FollowOptions(heartbeat_seconds=0.05, drain_seconds=1)
    frames = [f async for f in follow(hub, log, task_id, 0, options, repair)]
    assert [f.kind for f in frames] == [FrameKind.HEARTBEAT, FrameKind.EVENT]
    assert frames[-1].type == "end"


async def test_drain_reaches_streams_that_subscribe_late(hub: PubSubHub) -> None:
    hub.drain()
    async with hub.subscribe(task()) as sub:
        assert sub.queue.get_nowait() is Signal.DRAIN


@pytest.fixture
async def inbox_hub(redis: Redis) -> AsyncIterator[PubSubHub]:
    hub = PubSubHub(redis, queue_size=4, inbox=keys.inbox_channel("relay:queue", uuid.uuid4().hex))
    await hub.start()
    yield hub
    await hub.close()


def raw_event(task_id: str, seq: int, kind: str) -> bytes:
    return f'{{"seq":{seq},"type":"{kind}","task_id":"{task_id}","ts":0,"data":null}}'.encode()


async def test_the_inbox_hands_each_event_to_its_own_tasks_streams(inbox_hub: PubSubHub, redis: Redis) -> None:
    assert inbox_hub.inbox is not None  # confirmed by Redis before start returned
    first, second = task(), task()
    with inbox_hub.follow_inbox(first) as mine, inbox_hub.follow_inbox(second) as other:
        assert inbox_hub.channel_count == 0  # no subscription per task
        # One message carries the events of one commit, one per line (as commit.lua publishes them).
        message = raw_event(first, 1, "started") + b"\n" + raw_event(first, 2, "end")
        assert await redis.publish(inbox_hub.inbox, message) == 1
        got = [await asyncio.wait_for(mine.queue.get(), 5) for _ in range(2)]
        assert [(g.head.seq, g.head.type) for g in got if isinstance(g, Delivery)] == [(1, "started"), (2, "end")]
        assert other.queue.empty()
    assert inbox_hub.stream_count == 0


async def test_a_dropped_inbox_connection_makes_its_streams_reread_their_logs(
    inbox_hub: PubSubHub, redis: Redis
) -> None:
    """Whatever was published to the inbox while its connection was down is in the tasks' logs: the streams
    are told to re-read them once the inbox is subscribed again."""
    assert inbox_hub.inbox is not None
    with inbox_hub.follow_inbox(task()) as sub:
        sockname = inbox_hub._pubsub.connection._writer.get_extra_info("sockname")  # type: ignore[union-attr]
        await redis.client_kill(f"{sockname[0]}:{sockname[1]}")
        assert await asyncio.wait_for(sub.queue.get(), 10) is Signal.RESYNC
        # ... and the inbox is live again: a new event reaches the stream.
        deadline = asyncio.get_running_loop().time() + 10
        while await redis.publish(inbox_hub.inbox, raw_event("elsewhere", 1, "started")) == 0:
            assert asyncio.get_running_loop().time() < deadline, "the inbox was never subscribed again"
            await asyncio.sleep(0.05)
