"""The two pieces redis-py lacks for Relay's connections: a retry bounded by time, and a bounded pool that
says it is exhausted (also in front of Sentinel).

Built on redis-py's own classes; each override is a few lines, and ``tests/shared/test_redis_pools.py``
holds them to the redis-py version installed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
from redis import retry as sync_retry
from redis import sentinel as sync_sentinel
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import retry as async_retry
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError

T = TypeVar("T")


class PoolExhausted(ConnectionError):
    """Every connection of a bounded pool stayed busy for the whole wait: Relay is saturated, Redis may be fine."""


class AsyncBudgetRetry(async_retry.Retry):
    """redis-py's ``Retry`` with exponential backoff, bounded by time instead of by a count.

    redis-py retries a connect *inside* a retried command with the same object (and Sentinel adds a third
    level), so a count multiplies (40 retries became 40 x 40 attempts); nested time budgets only add up."""

    def __init__(self, seconds: float, *, base: float = 0.05, cap: float = 1.0) -> None:
        super().__init__(ExponentialBackoff(cap=cap, base=base), retries=-1)
        self.budget_seconds = seconds

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], fail: Callable[[Any], Any]) -> T:
        self._backoff.reset()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + self.budget_seconds
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                failures += 1
                await fail(error)
                delay = self._backoff.compute(failures)
                if time.monotonic() + delay > deadline:
                    raise error
                await asyncio.sleep(delay)


class SyncBudgetRetry(sync_retry.Retry):
    """``AsyncBudgetRetry`` for the synchronous client."""

    def __init__(self, seconds: float, *, base: float = 0.05, cap: float = 1.0) -> None:
        super().__init__(ExponentialBackoff(cap=cap, base=base), retries=-1)
        self.budget_seconds = seconds

    def call_with_retry(self, do: Callable[[], T], fail: Callable[[Exception], Any]) -> T:
        self._backoff.reset()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + self.budget_seconds
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                failures += 1
                fail(error)
                delay = self._backoff.compute(failures)
                if time.monotonic() + delay > deadline:
                    raise error
                time.sleep(delay)


class BoundedPool(BlockingConnectionPool):
    """redis-py's ``BlockingConnectionPool`` (at most ``max_connections``, waiting up to ``timeout`` for one),
    raising ``PoolExhausted`` when the wait runs out instead of a ``ConnectionError`` that reads like an outage."""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        try:
            connection: AbstractConnection = await super().get_connection()
        except ConnectionError as exc:
            # redis-py raises ConnectionError("No connection available.") from the wait's TimeoutError.
            if isinstance(exc.__cause__, TimeoutError):
                raise PoolExhausted(
                    f"all {self.max_connections} Redis connections stayed busy for {self.timeout}s"
                ) from exc
            raise
        return connection


class BoundedSentinelPool(BoundedPool, SentinelConnectionPool):
    """``BoundedPool`` whose connections go to the primary that Sentinel names (redis-py's
    ``SentinelConnectionPool``): the API's pool when ``RELAY_REDIS_SENTINELS`` is set. Pass
    ``connection_class`` (one of the Sentinel connections below)."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        # BlockingConnectionPool.__init__ passes these through to SentinelConnectionPool.__init__ by keyword.
        super().__init__(service_name=service_name, sentinel_manager=sentinel_manager, **kwargs)


# redis-py's Sentinel connection asks Sentinel for the primary's address, then connects to that address
# with the connection's own retry, and only asks Sentinel again once that retry gave up. With a patient
# retry that is the whole budget spent knocking on a dead primary while Sentinel already names a new
# one. These connect to an address once, so each retry of the outer loop asks Sentinel afresh.


class AsyncSentinelConnection(SentinelManagedConnection):
    """Sentinel-managed connection (asyncio) that re-asks Sentinel on every connection attempt."""

    async def connect_to(self, address: Any) -> None:
        patient, self.retry = self.retry, async_retry.Retry(NoBackoff(), 0)
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self.retry = patient


class AsyncSentinelSSLConnection(AsyncSentinelConnection, SSLConnection):
    """The same over TLS."""


class SyncSentinelConnection(sync_sentinel.SentinelManagedConnection):
    """Sentinel-managed connection (threads) that re-asks Sentinel on every connection attempt."""

    def connect_to(self, address: Any) -> None:
        patient, self.retry = self.retry, sync_retry.Retry(NoBackoff(), 0)
        try:
            super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self.retry = patient


class SyncSentinelSSLConnection(SyncSentinelConnection, redis.SSLConnection):
    """The same over TLS."""
