"""Lets a wake-up notice cut an idle worker's poll sleep short.

arq polls its queue every ``poll_delay``: with the default 0.5 s an idle worker picks a job up 250 ms
late on average, and polling faster costs Redis round trips from every idle worker. Instead, enqueuers
publish a notice (``shared.wakeup``) and this module swaps arq's poll timer (``arq.worker.poll``, the
async generator its main loop iterates) for one whose sleep ends early on a notice. Everything else in
arq's loop is untouched, and the timer still fires every ``poll_delay``, so a lost notice (or a Redis
hiccup on the notice channel) costs one poll delay, never a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

import arq.worker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys

logger = logging.getLogger("relay.worker")

PollTimer = Callable[[float], AsyncGenerator[float, None]]


def wakeable_poll(wake: asyncio.Event) -> PollTimer:
    """arq's ``poll`` (same contract: yield elapsed time every ``step`` seconds), ending its sleep on ``wake``."""

    async def poll(step: float = 0.5) -> AsyncGenerator[float, None]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            before = loop.time()
            wake.clear()  # a notice that lands while arq polls makes the next sleep end at once
            yield before - start
            remaining = max(0.0, step - (loop.time() - before))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)

    return poll


class WakeupListener:
    """Subscribes to the queue's wake-up channel and sets an event on each notice."""

    def __init__(self, redis: Redis, queue_name: str) -> None:
        self.event = asyncio.Event()
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._channel = keys.wakeup_channel(queue_name)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe, then install the wakeable timer into arq's worker loop."""
        await self._pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._listen(), name="relay-wakeup")
        arq.worker.poll = wakeable_poll(self.event)  # type: ignore[assignment]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _listen(self) -> None:
        while True:
            try:
                if await self._pubsub.get_message(timeout=5.0) is not None:
                    self.event.set()
            except (RedisError, OSError) as exc:  # the timer still polls; just retry the channel
                logger.warning("wake-up channel lost (%s); polling on the timer meanwhile", exc)
                await asyncio.sleep(1.0)
