"""The worker's hand-off listener (``worker.handoff``) against a real Redis, with a recording engine: items reach the
engine in order; stopping, the worker leaves the idle registry before its stop mark, and what is behind the mark
(pushed by a registration that raced the stop) is handed back, not dropped."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared import keys
from worker.handoff import HandoffListener


class RecordingEngine:
    def __init__(self) -> None:
        self.token = f"host:1:{uuid.uuid4().hex[:8]}"
        self.received: list[tuple[bytes, bool]] = []
        self.arrived = asyncio.Event()
        self.turns = 0  # event-loop turns so far, when a test counts them (``count_turns``)
        self.turn_of: list[int] = []  # the turn each item arrived in

    def receive_handoff(self, raw: bytes, stopping: bool = False) -> None:
        self.received.append((raw, stopping))
        self.turn_of.append(self.turns)
        self.arrived.set()

    async def count_turns(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.turns += 1


async def blocked_on_its_list(client: Redis) -> None:
    """Until a client (the listener's) waits in a blocking pop."""
    deadline = asyncio.get_running_loop().time() + 5
    while (await client.info("clients"))["blocked_clients"] < 1:
        assert asyncio.get_running_loop().time() < deadline, "the listener never waited on its list"
        await asyncio.sleep(0.01)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def test_items_reach_the_engine_and_a_stop_hands_back_what_came_after_the_mark(client: Redis) -> None:
    engine = RecordingEngine()
    queue_name = f"relay:hl:{uuid.uuid4().hex[:8]}"
    registry, handoff = keys.idle_registry(queue_name), keys.handoff(engine.token)
    listener = HandoffListener(client, engine, queue_name, block_seconds=0.2)  # type: ignore[arg-type]
    listener.start()
    await client.rpush(handoff, b'["a"]')  # type: ignore[misc]
    await asyncio.wait_for(engine.arrived.wait(), 5)
    assert engine.received == [(b'["a"]', False)]
    await client.hset(registry, engine.token, "registration")  # type: ignore[misc]
    await listener.leave()
    assert not await client.hexists(registry, engine.token)  # type: ignore[misc]
    # A claim sent before the stop registers the worker again, and an enqueue hands it one more job:
    await client.rpush(handoff, b'["b"]')  # type: ignore[misc]
    await listener.stop()
    assert engine.received == [(b'["a"]', False), (b'["b"]', True)]
    assert not await client.exists(handoff)
    assert not await client.hexists(registry, engine.token)  # type: ignore[misc]


async def test_a_malformed_item_is_skipped(client: Redis, caplog: Any) -> None:
    engine = RecordingEngine()

    def refuse(raw: bytes, stopping: bool = False) -> None:
        if raw == b"{":
            raise ValueError("not a claimed item")
        RecordingEngine.receive_handoff(engine, raw, stopping)

    engine.receive_handoff = refuse  # type: ignore[method-assign]
    listener = HandoffListener(client, engine, "relay:hl:x", block_seconds=0.2)  # type: ignore[arg-type]
    listener.start()
    await client.rpush(keys.handoff(engine.token), b"{", b'["c"]')  # type: ignore[misc]
    await asyncio.wait_for(engine.arrived.wait(), 5)
    await listener.stop()
    assert engine.received == [(b'["c"]', False)]
    assert "ignoring a malformed hand-off" in caplog.text


async def test_a_worker_killed_before_it_takes_its_stop_mark_leaves_no_key_for_good(client: Redis) -> None:
    """``leave`` pushes the mark; a worker SIGKILLed before its listener pops it (here: no listener runs) must not
    leave that list behind forever."""
    engine = RecordingEngine()
    listener = HandoffListener(client, engine, f"relay:hl:{uuid.uuid4().hex[:8]}", block_seconds=0.2)  # type: ignore[arg-type]
    await listener.leave()
    assert await client.lrange(keys.handoff(engine.token), 0, -1) == [b"stop"]  # type: ignore[misc]
    assert 0 < await client.pttl(keys.handoff(engine.token)) <= 3_600_000


async def test_jobs_handed_together_reach_the_engine_together(client: Redis) -> None:
    """One enqueue hands several jobs to an idle worker (one RPUSH): they start in the same turn of the event loop,
    as a claim's jobs do, not one pop's round trip apart (staggered starts left a drain claiming in small cohorts)."""
    engine = RecordingEngine()
    listener = HandoffListener(client, engine, f"relay:hl:{uuid.uuid4().hex[:8]}", block_seconds=5)  # type: ignore[arg-type]
    listener.start()
    turns = asyncio.create_task(engine.count_turns())
    try:
        await blocked_on_its_list(client)
        await client.rpush(keys.handoff(engine.token), b'["a"]', b'["b"]', b'["c"]')  # type: ignore[misc]
        while len(engine.received) < 3:
            await asyncio.wait_for(engine.arrived.wait(), 5)
            engine.arrived.clear()
        assert [raw for raw, _ in engine.received] == [b'["a"]', b'["b"]', b'["c"]']
        assert len(set(engine.turn_of)) == 1, engine.turn_of
    finally:
        turns.cancel()
        await listener.stop()


async def test_items_popped_with_the_stop_mark_behind_it_are_handed_back_at_once(client: Redis) -> None:
    engine = RecordingEngine()
    listener = HandoffListener(client, engine, f"relay:hl:{uuid.uuid4().hex[:8]}", block_seconds=5)  # type: ignore[arg-type]
    listener.start()
    await blocked_on_its_list(client)
    await client.rpush(keys.handoff(engine.token), b'["a"]', b"stop", b'["b"]')  # type: ignore[misc]
    assert listener._task is not None
    await asyncio.wait_for(asyncio.shield(listener._task), 5)  # the mark ends the listening
    assert engine.received == [(b'["a"]', False), (b'["b"]', True)]
    await listener.stop()
    assert engine.received == [(b'["a"]', False), (b'["b"]', True)]  # nothing twice


async def test_a_redis_without_blmpop_hands_jobs_over_one_at_a_time(client: Redis, caplog: Any) -> None:
    """Before Redis 7.0 there is no BLMPOP: the listener falls back to BLPOP and loses nothing."""
    engine = RecordingEngine()

    async def no_blmpop(*args: Any, **kwargs: Any) -> None:
        raise ResponseError("unknown command 'BLMPOP', with args beginning with: ")

    client.blmpop = no_blmpop  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, "relay.worker")
    listener = HandoffListener(client, engine, f"relay:hl:{uuid.uuid4().hex[:8]}", block_seconds=0.2)  # type: ignore[arg-type]
    listener.start()
    await client.rpush(keys.handoff(engine.token), b'["a"]', b'["b"]')  # type: ignore[misc]
    while len(engine.received) < 2:
        await asyncio.wait_for(engine.arrived.wait(), 5)
        engine.arrived.clear()
    await listener.stop()
    assert engine.received == [(b'["a"]', False), (b'["b"]', False)]
    assert "no BLMPOP" in caplog.text
