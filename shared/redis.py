"""arq's Redis connection settings, built the same way for the API and the workers."""

from __future__ import annotations

import dataclasses

from arq.connections import RedisSettings

from shared.settings import Settings


def redis_settings(config: Settings) -> RedisSettings:
    """From ``RELAY_REDIS_URL``; the first connect is retried for ~10 s so start order does not matter."""
    base = RedisSettings.from_dsn(config.redis_url)
    return dataclasses.replace(
        base, conn_timeout=max(1, round(config.redis_timeout_seconds)), conn_retries=10, conn_retry_delay=1
    )
