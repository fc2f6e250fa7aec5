"""arq's Worker and ``arq --check`` connect through ``shared.redis``.

arq 0.28 builds its pool in ``arq.connections.create_pool`` from a ``RedisSettings``. Through Sentinel
that path drops the sentinels' password, every timeout, the retries and the TLS options; and at start-up
it pings through redis-py's command retry, so with Redis down a worker printed nothing for ~40 s per
attempt and gave up with a traceback after about 7 minutes. ``arq.worker`` calls exactly two functions
that reach it, both looked up at call time, and this module replaces those two:

- ``create_pool`` (``Worker.main``): ``shared.redis.worker_client``, after waiting for Redis as long as it
  takes, with ONE log line per attempt. A worker started before Redis simply starts working when Redis
  does; a supervisor's liveness probe (``arq --check``) still sees it as not alive meanwhile.
- ``async_check_health`` (``arq --check``): one attempt, one line, exit code 1 when Redis is not usable.

On a Redis Cluster (``RELAY_REDIS_CLUSTER``) that pool is redis-py's cluster client (``shared.redis.RelayCluster``,
which carries what arq's ``Worker`` uses of ``ArqRedis``), and one more function arq calls is replaced:
``log_redis_info``, whose pipelined ``INFO`` redis-py refuses on a cluster; here it logs one line per primary.

Settings other than ``RelayRedisSettings`` (which carries Relay's settings) go to arq's own functions.
Written against arq 0.28.0 (pinned); ``install`` checks that and fails loudly otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import arq
import arq.connections
import arq.worker
from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name, expires_extra_ms, health_check_key_suffix
from arq.jobs import Deserializer, Serializer
from redis.exceptions import RedisError

from shared.cluster_version import primaries_too_old, refusal
from shared.config_errors import refuse
from shared.logs import configure as configure_logging
from shared.redis import (
    RelayCluster,
    RelayRedisSettings,
    close,
    describe,
    probe_client,
    wait_until_reachable,
    worker_client,
)

logger = logging.getLogger("relay.worker")

SUPPORTED_ARQ = "0.28.0"
_arq_create_pool = arq.connections.create_pool
_arq_check_health = arq.worker.async_check_health
_arq_log_redis_info = arq.worker.log_redis_info


async def create_pool(
    settings_: RedisSettings | None = None,
    *,
    retry: int = 0,
    job_serializer: Serializer | None = None,
    job_deserializer: Deserializer | None = None,
    default_queue_name: str = default_queue_name,
    expires_extra_ms: int = expires_extra_ms,
) -> ArqRedis:
    """arq's ``create_pool`` signature; Relay's pool once Redis answers (see module docstring)."""
    relay = getattr(settings_, "relay", None)
    if not isinstance(settings_, RelayRedisSettings) or relay is None:
        return await _arq_create_pool(
            settings_,
            retry=retry,
            job_serializer=job_serializer,
            job_deserializer=job_deserializer,
            default_queue_name=default_queue_name,
            expires_extra_ms=expires_extra_ms,
        )
    configure_logging()  # arq's CLI configures only arq's loggers; these lines come before on_startup
    await wait_until_reachable(relay, "worker")
    pool = worker_client(relay)
    pool.job_serializer = job_serializer
    pool.job_deserializer = job_deserializer
    pool.default_queue_name = default_queue_name
    pool.expires_extra_ms = expires_extra_ms
    return pool


async def check_health(
    redis_settings: RedisSettings | None, health_check_key: str | None = None, queue_name: str | None = None
) -> int:
    """``arq --check``: 0 while this worker's health key exists; one attempt, one line when Redis is not usable."""
    relay = getattr(redis_settings, "relay", None)
    if not isinstance(redis_settings, RelayRedisSettings) or relay is None:
        return await _arq_check_health(redis_settings, health_check_key, queue_name)
    key = health_check_key or (queue_name or default_queue_name) + health_check_key_suffix
    client = probe_client(relay)
    try:
        found = await client.get(key)
    except (RedisError, OSError) as exc:
        logging.getLogger("arq.worker").warning(
            "Health check failed: Redis at %s not usable: %s", describe(relay), " ".join(str(exc).split())
        )
        return 1
    finally:
        await close(client)
    if not found:
        logging.getLogger("arq.worker").warning("Health check failed: no health check sentinel value found")
        return 1
    logging.getLogger("arq.worker").info("Health check successful: %s", found)
    return 0


async def log_redis_info(redis: Any, log_func: Callable[[str], Any]) -> None:
    """arq's start-up line about Redis; on a cluster, one per primary (``INFO`` of each, not pipelined), and a
    refusal to start (exit 78) if a primary predates sharded pub/sub: every script would fail there."""
    if not isinstance(redis, RelayCluster):
        await _arq_log_redis_info(redis, log_func)
        return
    if too_old := await primaries_too_old(redis, log_func):
        refuse([refusal(too_old)])


def install() -> None:
    """Idempotent; called where ``worker.settings`` is imported, before arq uses it."""
    if arq.VERSION != SUPPORTED_ARQ:
        raise RuntimeError(f"worker.connect is written for arq {SUPPORTED_ARQ}, found {arq.VERSION}: re-check it")
    if arq.worker.create_pool is create_pool:
        return
    if arq.worker.create_pool is not _arq_create_pool or not callable(getattr(arq.worker, "async_check_health", None)):
        raise RuntimeError("arq.worker no longer calls create_pool/async_check_health as expected: re-check it")
    arq.worker.create_pool = create_pool
    arq.worker.async_check_health = check_health
    arq.worker.log_redis_info = log_redis_info
