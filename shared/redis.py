"""arq's Redis connection settings for workers."""

from __future__ import annotations

import dataclasses

from arq.connections import RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from shared.settings import Settings

# A worker rides out a Redis restart or failover of up to ~30 s: each command is retried with backoff
# (capped at 1 s) instead of crashing the worker mid-job. Longer outages do crash it, and its
# supervisor (Kubernetes, compose, scripts/dev) restarts it; jobs stay safe in Redis either way.
REDIS_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=40)


def redis_settings(config: Settings) -> RedisSettings:
    """From ``RELAY_REDIS_URL``; the first connect is retried for ~10 s so start order does not matter."""
    base = RedisSettings.from_dsn(config.redis_url)
    return dataclasses.replace(
        base,
        conn_timeout=max(1, round(config.redis_timeout_seconds)),
        conn_retries=10,
        conn_retry_delay=1,
        retry=REDIS_RETRY,
        retry_on_error=[ConnectionError, TimeoutError, OSError],
    )
