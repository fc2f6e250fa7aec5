"""A worker's wake-up subscription that the server drops (``CLIENT KILL``, a proxy cutting an idle connection, a
restart) is subscribed again by redis-py inside ``get_message``, with no error reaching the listener; a notice
published meanwhile is gone, including one naming this worker alone, which no other worker hears. The listener
sees the second confirmation of its channel and has the worker claim once, as after an error it sees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import redis

from shared import keys
from shared.redis import close, worker_client
from shared.settings import Settings
from worker.engine.engine import Engine
from worker.wakeup import WakeupListener

QUEUE = "relay:wakes"


class _Engine:
    """What the listener tells the engine: the job notices and the catch-up claims."""

    def __init__(self) -> None:
        self.jobs = 0
        self.catch_ups = 0

    def note_job(self, shard: int = 0) -> None:
        self.jobs += 1

    def catch_up(self, shard: int = 0) -> None:
        self.catch_ups += 1


async def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.02)


async def test_a_subscription_the_server_dropped_is_caught_up_once_it_is_back(spawn_redis: Callable[..., Any]) -> None:
    _, url = spawn_redis()  # a private server: the kill below must reach this listener's connection alone
    client = worker_client(Settings(redis_url=url, queue_name=QUEUE))
    engine = _Engine()
    listener = WakeupListener(client, QUEUE, cast(Engine, engine))
    admin = redis.Redis.from_url(url)
    channel = keys.wakeup_channel(QUEUE)

    def subscribers() -> int:
        return int(admin.pubsub_numsub(channel)[0][1])

    try:
        await listener.start()
        await until(lambda: subscribers() == 1, "subscription")
        admin.publish(channel, b"j")
        await until(lambda: engine.jobs == 1, "notice")
        assert engine.catch_ups == 0  # the first confirmation is the subscription itself

        assert admin.client_kill_filter(_type="pubsub") == 1
        await until(lambda: engine.catch_ups == 1, "catch-up claim after the subscription came back")
        assert subscribers() == 1
        admin.publish(channel, b"j")
        await until(lambda: engine.jobs == 2, "notice on the new connection")
        assert engine.catch_ups == 1
    finally:
        await listener.close()
        await close(client)
        admin.close()
