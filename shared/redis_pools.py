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
from redis.asyncio import ConnectionPool
from redis.asyncio import retry as async_retry
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError

T = TypeVar("T")


class PoolExhausted(ConnectionError):
    """Every connection of a bounded pool stayed busy for the whole wait: Relay is saturated, Redis may be fine."""


class Cutoff:
    """A moment (``time.monotonic``) after which a client retries no command, whatever its budget: set when
    a worker stops, so its shutdown never waits on a Redis it cannot reach. redis-py deep-copies a retry
    for every connection; the copies share this one object, so setting it reaches commands in flight."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Cutoff:
        return self

    def passed_by(self, moment: float) -> bool:
        return self.at is not None and moment > self.at


class AsyncBudgetRetry(async_retry.Retry):
    """redis-py's ``Retry`` with exponential backoff, bounded by time instead of by a count, and by its
    ``cutoff`` once that is set.

    redis-py retries a connect *inside* a retried command with the same object (and Sentinel adds a third
    level), so a count multiplies (40 retries became 40 x 40 attempts); nested time budgets only add up."""

    def __init__(self, seconds: float, *, base: float = 0.05, cap: float = 1.0, cutoff: Cutoff | None = None) -> None:
        super().__init__(ExponentialBackoff(cap=cap, base=base), retries=-1)
        self.budget_seconds = seconds
        self.cutoff = cutoff or Cutoff()

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
                retry_at = time.monotonic() + delay
                if retry_at > deadline or self.cutoff.passed_by(retry_at):
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


class BoundedPool(ConnectionPool):
    """A pool of at most ``max_connections``: a caller waits up to ``timeout`` for a free one, then gets
    ``PoolExhausted`` (not a ``ConnectionError`` that reads like an outage).

    Not redis-py's ``BlockingConnectionPool``: it hands connections out and takes them back under one
    ``asyncio.Condition``, so under a burst (400 stalled streams re-reading a busy task's log,
    ``tests/e2e/test_hostile.py``) a finished command waits in line behind every waiting caller before
    its connection is free, and callers time out while Redis is idle. Here a semaphore counts the
    connections handed out, a release frees its slot at once, and redis-py's pool keeps the rest."""

    def __init__(self, *, max_connections: int, timeout: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._holding: set[AbstractConnection] = set()

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolExhausted(
                f"all {self.max_connections} Redis connections stayed busy for {self.timeout:g}s"
            ) from None
        # What BlockingConnectionPool does, and not what ConnectionPool.get_connection does: that one
        # holds a pool-wide lock while it checks the connection, so under load every caller waits for
        # one event-loop turn per caller ahead of it (the lock serves re-authentication with token
        # credentials, which Relay does not use).
        connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]  # atomic: no await
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await super().release(connection)
            self._slots.release()
            raise
        self._holding.add(connection)
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        if connection in self._holding:  # the slot first: the await below may be cancelled
            self._holding.discard(connection)
            self._slots.release()
        await super().release(connection)


class BoundedSentinelPool(BoundedPool, SentinelConnectionPool):
    """``BoundedPool`` whose connections go to the primary that Sentinel names (redis-py's
    ``SentinelConnectionPool``): the API's pool when ``RELAY_REDIS_SENTINELS`` is set. Pass
    ``connection_class`` (one of the Sentinel connections below)."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        # BoundedPool.__init__ passes these through to SentinelConnectionPool.__init__ by keyword.
        super().__init__(service_name=service_name, sentinel_manager=sentinel_manager, **kwargs)


# redis-py's Sentinel connection asks Sentinel for the primary's address, then connects to that address
# with the connection's own retry, and only asks Sentinel again once that retry gave up. With a patient
# retry that is the whole budget spent knocking on a dead primary while Sentinel already names a new
# one. These connect to an address once, so each retry of the outer loop asks Sentinel afresh.


_LENGTH_HEADERS = [b"$%d\r\n" % size for size in range(1024)]  # RESP's length line of a short argument


class _ClosedTransportIsConnectionError(AbstractConnection):
    """How a command is written, twice unlike redis-py's:

    - uvloop (which Sanic runs) raises ``RuntimeError: ... the handler is closed`` when a command is written to
      a connection the server closed (a Redis restart, a killed primary: seen as a 500 in the failover test),
      where asyncio's own loop raises an ``OSError`` that redis-py turns into ``ConnectionError``. Made a
      ``ConnectionError`` here, it is retried on a fresh connection or answered 503 like any lost connection
      (uvloop issue #506).
    - redis-py bounds each write by ``socket_timeout`` with ``asyncio.wait_for``, which on Python 3.11 runs the
      write in a Task of its own (one per command: a tenth of an API process's work per submit at one client)
      and can lose a cancel (CPython gh-86296). A write goes to the socket at once unless its buffer is full,
      so here the time limit is an ``asyncio.timeout`` around the wait for room, only when there is one to wait
      for: the same ``TimeoutError`` after ``socket_timeout``, no Task, no lost cancel.

    And a new connection's set-up sends no health-check PING (``on_connect``)."""

    async def on_connect(self) -> None:
        """redis-py's set-up, with no health-check PING inside it (``check_health``, before a command is written):
        against a server that requires a password Relay was not given, the PING's NOAUTH dropped the connection
        and made it again, whose set-up PINGed again, until Python's recursion limit. That read as a lost
        connection (a transient 503, a worker retrying its whole budget), not as the refusal it was
        (``redis_auth``). A connection just made needs no check."""
        if self.health_check_interval:
            self.next_health_check = asyncio.get_running_loop().time() + self.health_check_interval
        await super().on_connect()

    def pack_command(self, *args: Any) -> list[bytes]:
        """redis-py's encoding of one command, in linear time and with less work per argument: redis-py grows
        one buffer by copying it for each argument (up to 6 KB each time), 95 us for the 190 arguments of a batch
        of 26 submits (28 us here). The same bytes on the wire (``tests/shared/test_redis_connections.py``); an
        argument above the cut-off is still sent as is, uncopied."""
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        encoder, cutoff, heads = self.encoder, self._buffer_cutoff, _LENGTH_HEADERS
        output: list[bytes] = []
        parts: list[bytes] = [b"*%d\r\n" % len(args)]
        for arg in args:
            kind = type(arg)
            if kind is str:
                arg = arg.encode(encoder.encoding, encoder.encoding_errors)
            elif kind is not bytes:
                arg = encoder.encode(arg)  # type: ignore[no-untyped-call]  # numbers, memoryviews; a bool or None: refused
            size = len(arg)
            if size < len(heads):
                parts += (heads[size], arg, b"\r\n")
            elif size > cutoff or isinstance(arg, memoryview):
                parts.append(b"$%d\r\n" % size)
                output += (b"".join(parts), arg)
                parts = [b"\r\n"]
            else:
                parts += (b"$%d\r\n" % size, arg, b"\r\n")
        output.append(b"".join(parts))
        return output

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await self._send_packed(command, check_health)
        except RuntimeError as exc:
            if "handler is closed" not in str(exc):
                raise
            raise ConnectionError(f"the connection was closed under a write ({exc})") from exc

    async def _send_packed(self, command: Any, check_health: bool) -> None:
        """redis-py 5.x's ``send_packed_command`` but for the time limit (see the class docstring)."""
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        elif check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            writer = self._writer
            assert writer is not None  # connected above
            writer.writelines(command)
            if self.socket_timeout and writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.socket_timeout):
                    await writer.drain()
            else:
                await writer.drain()  # returns at once: the buffer is below its high-water mark
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else (e.args[0], e.args[1])
            raise ConnectionError(f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:
            # As redis-py: a write cut off half-way cannot be resumed, so the connection is not kept.
            await self.disconnect(nowait=True)
            raise


class AsyncConnection(_ClosedTransportIsConnectionError, Connection):
    """redis-py's asyncio connection, with a closed transport reported as a lost connection."""


class AsyncSSLConnection(_ClosedTransportIsConnectionError, SSLConnection):
    """The same over TLS."""


class AsyncUnixConnection(_ClosedTransportIsConnectionError, UnixDomainSocketConnection):
    """The same over a Unix socket."""


class AsyncSentinelConnection(_ClosedTransportIsConnectionError, SentinelManagedConnection):
    """Sentinel-managed connection (asyncio) that re-asks Sentinel on every connection attempt."""

    async def connect_to(self, address: Any) -> None:
        patient, self.retry = self.retry, async_retry.Retry(NoBackoff(), 0)
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self.retry = patient


class AsyncSentinelSSLConnection(AsyncSentinelConnection, SSLConnection):
    """The same over TLS."""


class _FollowsClusterNodes(Connection):
    """A connection that, on each (re)connection, goes to the first node of a cluster that accepts it, from
    ``addresses()`` (the cluster client's current view, see ``shared.redis.RelayCluster.pubsub``). The node it
    lost last is tried last: it is most likely the one that just died. A sharded subscription on a node that does
    not hold its slot is redirected (``shared.sharded_pubsub``), and the next connection goes where it says."""

    def __init__(self, *, addresses: Callable[[], list[tuple[str, int]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._addresses = addresses
        self._lost: tuple[str, int] | None = None

    async def _connect(self) -> None:
        candidates = self._addresses() or [(self.host, self.port)]
        if self._lost in candidates and len(candidates) > 1:
            candidates = [a for a in candidates if a != self._lost] + [self._lost]
        failure: BaseException | None = None
        for host, port in candidates:
            self.host, self.port = host, port
            try:
                await super()._connect()  # type: ignore[no-untyped-call]
                return
            except OSError as error:  # refused, unreachable, or no answer in time (TimeoutError is an OSError)
                failure = error
        assert failure is not None
        raise failure

    async def disconnect(self, nowait: bool = False) -> None:
        if self.is_connected:
            self._lost = (self.host, self.port)
        await super().disconnect(nowait)


class AsyncClusterPubSubConnection(_FollowsClusterNodes, AsyncConnection):
    """``AsyncConnection`` to whichever node of a cluster is up (``_FollowsClusterNodes``)."""


class AsyncClusterPubSubSSLConnection(_FollowsClusterNodes, AsyncSSLConnection):
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
