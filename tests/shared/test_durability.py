"""shared.durability against a real Redis: WAIT must run on the connection that enqueued."""

from __future__ import annotations

import asyncio

import pytest
import redis

from shared.durability import NotReplicated, confirm, pinned
from shared.redis import api_client
from shared.settings import Settings
from tests.support.processes import wait_until


async def test_the_pinned_client_keeps_one_connection_while_the_pool_is_used(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, redis_wait_replicas=1, redis_wait_timeout_ms=100)
    pool = api_client(settings)
    admin = redis.Redis.from_url(redis_url)
    key = f"never-{id(pool)}"
    try:
        async with pinned(pool, settings) as client:
            first = await client.client_id()
            # A BLPOP on the shared pool takes the most recently released connection: if the client
            # were the pool itself, that would be the one just used, and the next command would get another.
            blocked = asyncio.create_task(pool.blpop([key], timeout=5))
            before = int(admin.info("clients")["blocked_clients"])
            await asyncio.to_thread(
                wait_until,
                lambda: int(admin.info("clients")["blocked_clients"]) > before - 1 and not blocked.done(),
                5,
                "BLPOP",
            )
            assert await client.client_id() == first
            admin.rpush(key, "x")
            await blocked
            await client.set(key, 1)
            with pytest.raises(NotReplicated) as caught:  # the suite's Redis has no replica
                await confirm(client, settings, "t1")
            assert (caught.value.task_id, caught.value.confirmed, caught.value.wanted) == ("t1", 0, 1)
        assert await pool.ping()  # the block gave its connection back and left the pool open
    finally:
        admin.delete(key)
        admin.close()
        await pool.aclose()


async def test_without_the_setting_nothing_is_pinned_or_awaited(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    pool = api_client(settings)
    try:
        async with pinned(pool, settings) as client:
            assert client is pool
            await confirm(client, settings, "t2")  # no WAIT: returns at once with no replica
    finally:
        await pool.aclose()
