"""The worker's hand-off listener (``worker.handoff``) against a real Redis, with a recording engine: items reach the
engine in order; stopping, the worker leaves the idle registry before its stop mark, and what is behind the mark
(pushed by a registration that raced the stop) is handed back, not dropped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shared import keys
from worker.handoff import HandoffListener


class RecordingEngine:
    def __init__(self) -> None:
        self.token = f"host:1:{uuid.uuid4().hex[:8]}"
        self.received: list[tuple[bytes, bool]] = []
        self.arrived = asyncio.Event()

    def receive_handoff(self, raw: bytes, stopping: bool = False) -> None:
        self.received.append((raw, stopping))
        self.arrived.set()


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
