"""Writing events the way Relay's scripts do, for tests of the readers (follow, replay, streams)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from shared import events
from shared.events import EventType
from shared.scripts import with_library

# Append bodies after the task's counter, like the worker's commit does (no ownership check: tests only).
_EMIT = with_library(
    """
local id, max_len, max_bytes, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local seq = tonumber(redis.call('GET', SEQ .. id) or '0')
local last = relay_emit(id, seq, ARGV, 5, #ARGV, max_len, max_bytes, ttl)
redis.call('SET', SEQ .. id, last)
return last
"""
)


async def publish(
    redis: Redis,
    task_id: str,
    *items: tuple[EventType, Any],
    max_len: int = 10_000,
    max_bytes: int = 1_048_576,
    ttl_seconds: int = 3600,
) -> int:
    """Store and publish ``items`` as one entry (the way one commit does); returns the last seq."""
    bodies = [events.body(task_id, type_, data) for type_, data in items]
    script = redis.register_script(_EMIT)
    return int(await script(keys=[], args=[task_id, max_len, max_bytes, ttl_seconds * 1000, *bodies]))
