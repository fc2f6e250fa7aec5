"""Redis connections: arq's settings for workers (patient) and a client for callers that must not wait."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from urllib.parse import urlsplit, urlunsplit

from arq.connections import ArqRedis, RedisSettings
from redis import Redis as SyncRedis
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError
from redis.retry import Retry as SyncRetry

from shared.serialization import dumps, loads
from shared.settings import Settings

logger = logging.getLogger("relay.redis")

# A worker rides out a Redis restart or failover of up to ~30 s: each command is retried with backoff
# (capped at 1 s) instead of crashing the worker mid-job. Longer outages do crash it, and its
# supervisor (Kubernetes, compose, scripts/dev) restarts it; jobs stay safe in Redis either way.
REDIS_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=40)


def public_url(url: str) -> str:
    """``url`` with its password masked, fit for a log line that says which Redis a process uses."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


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


async def connect_fail_fast(settings: Settings, attempts: int = 20) -> ArqRedis:
    """An arq client whose commands time out and are not retried: for callers that must answer now
    (the API's 503s, the bridge's abandon), unlike workers, which wait a Redis restart out."""
    timeout = settings.redis_timeout_seconds
    pool = ArqRedis(
        connection_pool=ConnectionPool.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        ),
        job_serializer=dumps,
        job_deserializer=loads,
        default_queue_name=settings.queue_name,
    )
    for attempt in range(1, attempts + 1):
        try:
            await pool.ping()
            return pool
        except (RedisError, OSError) as exc:
            if attempt == attempts:
                raise
            logger.warning("Redis not reachable yet (%s); retrying", exc)
            await asyncio.sleep(0.5)
    return pool


def sync_client(settings: Settings) -> SyncRedis:
    """A synchronous client (for threads: the worker's lease renewal), with the workers' retry behaviour."""
    timeout = settings.redis_timeout_seconds
    return SyncRedis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=SyncRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        retry_on_error=[ConnectionError, TimeoutError, OSError],
    )
