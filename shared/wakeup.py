"""Wake-up notices: published whenever a job becomes runnable, so idle workers need not wait a poll."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys

logger = logging.getLogger("relay.wakeup")


async def notify_workers(redis: Redis, queue_name: str) -> None:
    """Best effort: a lost notice only costs one poll delay, so it never fails the caller."""
    try:
        await redis.publish(keys.wakeup_channel(queue_name), b"1")
    except (RedisError, OSError) as exc:
        logger.debug("wake-up notice not sent: %s", exc)
