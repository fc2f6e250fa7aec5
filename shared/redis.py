"""Every Redis connection Relay makes is built here, from the same settings.

**Where**: ``RELAY_REDIS_URL`` (``redis://``, ``rediss://`` for TLS, ``unix://``), or, when
``RELAY_REDIS_SENTINELS`` is set, whichever server those sentinels name as the primary of
``RELAY_REDIS_SENTINEL_MASTER`` (the URL then gives only the database, the credentials and whether to
use TLS). ``RELAY_REDIS_USERNAME`` / ``RELAY_REDIS_PASSWORD`` override the URL's credentials, so the URL
can live in a ConfigMap and the password in a Secret. TLS verifies the server's certificate against
``RELAY_REDIS_TLS_CA_FILE`` (or the system's CAs) and, unless ``RELAY_REDIS_TLS_CHECK_HOSTNAME=false``,
that it names the host.

**How patient**, by who uses the client:

- ``api_client``: the API's pool, bounded (``RELAY_REDIS_MAX_CONNECTIONS``, waiting
  ``RELAY_REDIS_POOL_TIMEOUT_SECONDS`` for a free one), failing fast so a request answers 503 in time;
  a command that met a dropped connection or a demoted primary (READONLY) is retried once, at once, on
  a fresh connection. Its pub/sub hub rides on the same pool.
- ``worker_client`` (what arq's Worker gets, see ``worker.connect``) and ``sync_client`` (for threads):
  every command that meets a lost connection, a timeout or READONLY is retried with backoff for
  ``RETRY_BUDGET_SECONDS``, so a Redis restart or a failover is ridden out mid-job; once the worker is
  stopping, only until its stop deadline (``stop_retrying_at``).
- ``connect_fail_fast``: the Service Bus bridge's client, which handles failures itself (abandon, wait).

Every client drops a connection that answered READONLY, so the next command reaches the new primary
(through Sentinel, or through a DNS name that follows failover).

**Redis Cluster** (``RELAY_REDIS_CLUSTER=true``): the same four clients are redis-py's cluster client
(``RelayCluster``), which discovers every node from the one ``RELAY_REDIS_URL`` names and follows ``MOVED`` and
``ASK``; each process then uses the tagged key layout (``shared.keys.use_layout``). The differences, all of this
phase (issue #22): a node's connections are capped but not waited for (redis-py's cluster client raises at the
cap); a command that met a lost connection or a failover is sent again after the cluster's layout is read
afresh (the API and the bridge once; a worker's commands and pipelines for ``RETRY_BUDGET_SECONDS``, as on one
Redis, see ``RelayCluster.within_budget``; the threads' synchronous client ``CLUSTER_RETRIES`` times);
pub/sub is sharded (``SPUBLISH``/``SSUBSCRIBE``, ``shared.sharded_pubsub``): a subscription goes to the primary
that holds the namespace's slot, and follows the slot when it moves or its node is lost (``RelayCluster.pubsub``);
a script followed by ``WAIT`` (``RELAY_REDIS_WAIT_REPLICAS``) goes on one connection to the primary of the
script's slot (``RelayCluster.script_then_wait``). While a reshard moves the namespace's slot, every script call
declares a key that never exists (``RelayCluster.register_script``), so the cluster refuses it with ``TRYAGAIN``
until the slot has settled, and that refusal is sent again like an outage (``CLUSTER_OUTAGE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from arq.connections import ArqRedis, RedisSettings
from redis import retry as sync_retry
from redis import sentinel as sync_sentinel
from redis.asyncio import ConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio import connection as async_connection
from redis.asyncio import retry as async_retry
from redis.asyncio import sentinel as async_sentinel
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.commands.core import AsyncScript, Script
from redis.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from shared import cluster_nodes, keys
from shared.redis_errors import ClusterUnreachable
from shared.redis_pools import (
    AsyncBudgetRetry,
    AsyncClusterPubSubConnection,
    AsyncClusterPubSubSSLConnection,
    AsyncConnection,
    AsyncSentinelConnection,
    AsyncSentinelSSLConnection,
    AsyncSSLConnection,
    AsyncUnixConnection,
    BoundedPool,
    BoundedSentinelPool,
    Cutoff,
    SyncBudgetRetry,
    SyncSentinelConnection,
    SyncSentinelSSLConnection,
)
from shared.serialization import dumps, loads
from shared.settings import Settings
from shared.sharded_pubsub import ShardedPubSub

logger = logging.getLogger("relay.redis")
T = TypeVar("T")

# Workers and threads retry a command this long through a restart or failover (Sentinel's failover takes
# down-after-milliseconds plus a few seconds); nested connect retries can at most double it.
RETRY_BUDGET_SECONDS = 30.0
# Errors after which a connection is dropped and a patient client tries again on a new one.
PATIENT_RETRY_ON = (ConnectionError, TimeoutError, OSError, ReadOnlyError)
# The API retries only what a fresh connection fixes at once; a timeout already used up its time.
API_RETRY_ON = (ConnectionError, ReadOnlyError)
HEALTH_CHECK_INTERVAL_SECONDS = 30  # a connection idle this long is PINGed before use
MARK_MS = 60_000  # how long a replication mark (``keys.replication_mark``) is kept: only its write matters
# On a cluster, how often redis-py sends a patient client's command again after the cluster's layout is read afresh
# (each try first reconnects with CONNECT_RETRIES backed-off attempts); RelayCluster.execute_command then repeats
# that, with backoff, until RETRY_BUDGET_SECONDS have passed.
CLUSTER_RETRIES = 20
# What a cluster answers while it fails over (the lost primary refuses, the layout is not yet updated) or while a
# reshard moves the namespace's slot: TRYAGAIN, which redis-py sends again 16 times (about 0.4 s) before it raises
# ClusterError("TTL exhausted."). Neither ran the command, so sending it again is safe.
CLUSTER_OUTAGE = (
    ConnectionError,
    TimeoutError,
    OSError,
    ClusterError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
CONNECT_RETRIES = 3
# What makes a cluster client close its connections and read the layout afresh before it tries again (redis-py's).
_LAYOUT_CHANGED = (ConnectionError, TimeoutError, ClusterDownError, SlotNotCoveredError)


@dataclasses.dataclass(frozen=True)
class _Target:
    """Where to connect and with what, without any retry or pool policy."""

    kwargs: dict[str, Any]  # host/port or path, db, credentials, timeouts, TLS options
    tls: bool
    unix: bool
    sentinels: list[tuple[str, int]]
    master: str


def _target(settings: Settings) -> _Target:
    # parse_url raises ValueError for a scheme other than redis://, rediss:// and unix://
    parsed: dict[str, Any] = dict(parse_url(settings.redis_url))  # type: ignore[no-untyped-call]
    parsed.pop("connection_class", None)
    tls = settings.redis_url.startswith("rediss://")
    unix = "path" in parsed
    timeout = settings.redis_timeout_seconds
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
    }
    if not unix:
        kwargs["socket_keepalive"] = True
    if tls:
        kwargs["ssl_cert_reqs"] = "required"
        kwargs["ssl_check_hostname"] = settings.redis_tls_check_hostname
        kwargs["ssl_ca_certs"] = settings.redis_tls_ca_file or None
    kwargs.update(parsed)  # options in the URL's query string win: they were written on purpose
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password.get_secret_value():
        kwargs["password"] = settings.redis_password.get_secret_value()
    sentinels = settings.sentinel_addresses()
    if sentinels:
        if unix:
            raise ValueError("RELAY_REDIS_SENTINELS needs a redis:// or rediss:// RELAY_REDIS_URL")
        kwargs.pop("host", None)  # Sentinel supplies the primary's address
        kwargs.pop("port", None)
    return _Target(kwargs, tls, unix, sentinels, settings.redis_sentinel_master)


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves (they have their own password, if any)."""
    timeout = settings.redis_timeout_seconds
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "socket_keepalive": True}
    if settings.redis_sentinel_username:
        kwargs["username"] = settings.redis_sentinel_username
    if settings.redis_sentinel_password.get_secret_value():
        kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    return kwargs


def public_url(url: str) -> str:
    """``url`` with its password masked, fit for a log line that says which Redis a process uses."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def describe(settings: Settings) -> str:
    """Where Relay connects, for log lines (never a password)."""
    target = _target(settings)
    if target.sentinels:
        via = ",".join(f"{host}:{port}" for host, port in target.sentinels)
        where = f"primary {target.master!r} via sentinels {via}"
    elif target.unix:
        where = f"unix:{target.kwargs['path']}"
    else:
        where = f"{target.kwargs.get('host', 'localhost')}:{target.kwargs.get('port', 6379)}"
    if settings.redis_cluster:
        where = f"cluster via {where}"
    return where + (" (TLS)" if target.tls else "")


def _async_connection_class(target: _Target) -> type[async_connection.AbstractConnection]:
    if target.unix:
        return AsyncUnixConnection
    return AsyncSSLConnection if target.tls else AsyncConnection


def _async_pool(settings: Settings, policy: dict[str, Any], bounded: bool) -> ConnectionPool:
    target = _target(settings)
    kwargs = target.kwargs | policy
    if bounded:
        kwargs |= {"max_connections": settings.redis_max_connections, "timeout": settings.redis_pool_timeout_seconds}
    if target.sentinels:
        manager = async_sentinel.Sentinel(target.sentinels, sentinel_kwargs=_sentinel_kwargs(settings))  # type: ignore[no-untyped-call]
        sentinel_pool = BoundedSentinelPool if bounded else async_sentinel.SentinelConnectionPool
        connection = AsyncSentinelSSLConnection if target.tls else AsyncSentinelConnection
        return sentinel_pool(target.master, manager, is_master=True, connection_class=connection, **kwargs)
    plain_pool = BoundedPool if bounded else ConnectionPool
    return plain_pool(connection_class=_async_connection_class(target), **kwargs)


def _arq_client(settings: Settings, pool: ConnectionPool) -> ArqRedis:
    """An arq client on ``pool`` that owns it and stores jobs as JSON (never pickle)."""
    client = ArqRedis(pool, job_serializer=dumps, job_deserializer=loads, default_queue_name=settings.queue_name)
    client.auto_close_connection_pool = True  # what redis-py's from_pool does
    return client


def _patient_policy() -> dict[str, Any]:
    return {"retry": AsyncBudgetRetry(RETRY_BUDGET_SECONDS), "retry_on_error": list(PATIENT_RETRY_ON)}


def _fail_fast_policy() -> dict[str, Any]:
    # supported_errors leaves TimeoutError out, so a connect that timed out is not tried again either.
    retry = async_retry.Retry(NoBackoff(), 1, supported_errors=API_RETRY_ON)
    return {"retry": retry, "retry_on_error": list(API_RETRY_ON)}


class _PatientPipeline(ClusterPipeline):
    """A cluster pipeline whose ``execute`` goes through ``RelayCluster.within_budget`` (redis-py empties its
    command stack when ``execute`` returns or raises, so each try is given the commands again)."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        commands = list(self._command_stack)
        send = super().execute

        async def once() -> list[Any]:
            self._command_stack = list(commands)
            return await send(raise_on_error, allow_redirections)

        return await cast(RelayCluster, self._client).within_budget(once)


class _GuardedScript(AsyncScript):
    """A script whose every call also declares the namespace's migration guard (``RelayCluster.register_script``)."""

    def __init__(self, registered_client: Any, script: Any, guard: str) -> None:
        super().__init__(registered_client, script)
        self.guard = guard

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        return await super().__call__([*(keys or []), self.guard], args, client)


class _GuardedSyncScript(Script):
    """``_GuardedScript`` for the synchronous cluster client (the lease renewal thread's)."""

    def __init__(self, registered_client: Any, script: Any, guard: str) -> None:
        super().__init__(registered_client, script)
        self.guard = guard

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        return super().__call__([*(keys or []), self.guard], args, client)


def _slot_unserved(exc: SlotNotCoveredError) -> ClusterUnreachable:
    """A slot no node serves (redis-py's ``SlotNotCoveredError``, not a ``RedisError``, raised once its own tries
    ran out, as a cluster fails over) as the outage it is."""
    return ClusterUnreachable(f"no node serves the slot: {exc}")


class _SyncRelayCluster(SyncRedisCluster):
    """redis-py's synchronous cluster client whose scripts declare the migration guard, as ``RelayCluster``'s, and
    whose slot without a node is an outage (``_slot_unserved``)."""

    def __init__(self, *, queue_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue_name = queue_name

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except SlotNotCoveredError as exc:
            raise _slot_unserved(exc) from exc

    def register_script(self, script: Any) -> Script:
        """The guard of the shard the script is registered for (``keys.on_shard``; its text carries that tag)."""
        return _GuardedSyncScript(self, script, keys.migration_guard(self.queue_name))


class RelayCluster(RedisCluster):
    """redis-py's asyncio cluster client with the parts of ``ArqRedis`` that Relay and arq's ``Worker`` use: its
    serializer attributes, ``close(close_connection_pool=...)``, ``publish`` and ``pubsub`` (which redis-py's
    asyncio cluster client lacks: here sharded, on a connection to the namespace's slot's primary; see
    ``pubsub``). Made by ``_cluster_client``; typed as ``ArqRedis`` where Relay passes it."""

    def __init__(
        self,
        *,
        queue_name: str,
        pubsub_kwargs: dict[str, Any],
        retry_budget: float = 0.0,
        shards: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shards = shards  # RELAY_QUEUE_SHARDS
        cluster_nodes.guard(self.nodes_manager)
        self.retry_budget = retry_budget
        self.cutoff = Cutoff()
        # redis-py's cluster client picks redis-py's own connection classes: Relay's report a closed transport
        # as a lost connection (redis_pools). Nodes found later are made from these same kwargs.
        tls = kwargs.get("ssl", False)
        self.connection_kwargs["connection_class"] = AsyncSSLConnection if tls else AsyncConnection
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = self.connection_kwargs["connection_class"]
        self.job_serializer = dumps
        self.job_deserializer = loads
        self.default_queue_name = queue_name
        self.expires_extra_ms = 86_400_000
        self._pubsub_kwargs = pubsub_kwargs
        # Per slot: one per shard of the queue (``RELAY_QUEUE_SHARDS``; one slot when it has one).
        self._pubsub_pools: dict[int, ConnectionPool] = {}
        self._moved_to: dict[int, tuple[str, int]] = {}

    async def _determine_slot(self, command: str, *args: Any) -> int:
        """``BLMPOP timeout 1 key ...`` (the worker's hand-off list, ``worker.handoff``) goes to its key's slot.
        redis-py asks a node for the keys of a command whose keys move (``COMMAND GETKEYS``) before every call: a
        round trip more on the way of each hand-off."""
        if command.upper() == "BLMPOP" and len(args) >= 3 and int(args[1]) == 1:
            return int(self.keyslot(args[2]))
        return int(await super()._determine_slot(command, *args))

    async def close(self, close_connection_pool: bool | None = None) -> None:
        """arq's ``close(close_connection_pool=True)``, and ``shared.redis.close``'s: every node's connections, and
        the pub/sub pool."""
        await self.aclose()
        pools, self._pubsub_pools = self._pubsub_pools, {}
        for pool in pools.values():
            await pool.disconnect()

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close every node's connections (``close_connection_pool``: as ``Redis.aclose`` takes it; a cluster
        client always owns its connections). Not the pub/sub pool: redis-py calls this itself after every lost
        connection, to read the layout afresh, and that must not cut the subscriptions of a node that is fine."""
        await super().aclose()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """redis-py's, sent again through a failover as ``within_budget`` says."""
        send = super().execute_command
        return await self.within_budget(lambda: send(*args, **kwargs))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        """redis-py's cluster pipeline (no transaction), sent again through a failover as ``within_budget`` says."""
        super().pipeline(transaction, shard_hint)  # its checks of the arguments
        return _PatientPipeline(self)  # type: ignore[abstract]  # as RelayCluster: redis-py types connection_pool

    async def within_budget(self, send: Callable[[], Awaitable[T]]) -> T:
        """``send()``, and for a patient client (``retry_budget`` > 0) again, with backoff, for up to
        ``retry_budget`` seconds (as on one Redis) or until ``cutoff``, while the cluster is failing over: the node
        that held the slot refuses connections until its replica is promoted and the layout says so, which takes
        longer than redis-py's count of layout re-reads when each refusal is instant."""
        backoff = ExponentialBackoff(cap=1.0, base=0.05)
        deadline = time.monotonic() + self.retry_budget
        failures = 0
        while True:
            try:
                return await send()
            except CLUSTER_OUTAGE as exc:
                failures += 1
                retry_at = time.monotonic() + backoff.compute(failures)
                if not self.retry_budget or retry_at > deadline or self.cutoff.passed_by(retry_at):
                    if isinstance(exc, SlotNotCoveredError):
                        raise _slot_unserved(exc) from exc
                    raise
                await asyncio.sleep(retry_at - time.monotonic())

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]  # redis-py: Script
        """redis-py's, but every call also declares ``keys.migration_guard``, a key in the namespace's slot that
        never exists. Relay's scripts build most key names themselves, so Redis checks only the keys they are given
        before it runs them; mid-reshard a script could run on the node that has some of the slot's keys and then
        meet one already moved (an error half-way through, after some writes) or, sent on by ``ASK``, run on the
        new node and read a key not moved yet as missing. A missing key among several is refused with ``TRYAGAIN``
        on both nodes while the slot moves, so no script runs until it has settled (``within_budget``)."""
        return _GuardedScript(self, script, keys.migration_guard(self.default_queue_name))

    async def script_then_wait(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any], mark: str, replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """``script``, a write of ``mark`` (``shared.durability``), then ``WAIT replicas timeout_ms``, in one
        pipeline on one connection to the primary that holds the slot of ``keys`` (WAIT counts the writes of its
        own connection; redis-py's cluster pipeline cannot route a keyless WAIT there): the script's reply and how
        many replicas confirmed. Redirections are followed as redis-py follows them for one command (MOVED, ASK,
        TRYAGAIN; NOSCRIPT loads the script on that node); a lost connection or a cluster failing over sends them
        all again on the layout read afresh, as ``execute_command`` would, so the script must be safe to apply
        twice."""
        slot = self.keyslot(keys[0])
        if isinstance(script, _GuardedScript):  # its migration guard too, as its own calls send it
            keys = [*keys, script.guard]
        commands = [
            ("EVALSHA", script.sha, len(keys), *keys, *args),
            ("SET", mark, 1, "PX", MARK_MS),
            ("WAIT", replicas, timeout_ms),
        ]

        async def tries() -> tuple[Any, int]:
            for attempt in range(1 + self.cluster_error_retry_attempts):
                try:
                    if self._initialize:
                        await self.initialize()
                    reply, _, confirmed = await self._on_owner(slot, commands, script)
                    return reply, int(confirmed)
                except _LAYOUT_CHANGED:
                    await self.aclose()  # as redis-py does: the next try reads the cluster's layout afresh
                    if attempt >= self.cluster_error_retry_attempts:
                        raise
            raise AssertionError("unreachable")

        return await self.within_budget(tries)

    async def _on_owner(self, slot: int, commands: list[tuple[Any, ...]], script: AsyncScript) -> list[Any]:
        """The replies of ``commands`` (the first one ``script``'s EVALSHA), sent in one pipeline to the node that
        holds ``slot``, following its redirections; a command's error raised."""
        asked: ClusterNode | None = None
        for _ in range(self.RedisClusterRequestTTL):
            node = asked or self.nodes_manager.get_node_from_slot(slot)
            stack = [PipelineCommand(i, *c) for i, c in enumerate([("ASKING",)] if asked else [])]
            stack += [PipelineCommand(len(stack) + i, *c) for i, c in enumerate(commands)]
            await node.execute_pipeline(stack)
            replies = [c.result for c in stack[len(stack) - len(commands) :]]
            first, asked = replies[0], None
            if isinstance(first, MovedError):
                # What redis-py's own client does with a MOVED: the next lookup takes the slot's owner from it
                # (shared.cluster_nodes; tests/shared/test_cluster_wait.py holds this to the installed redis-py).
                self.nodes_manager._moved_exception = first
            elif isinstance(first, AskError):
                asked = self.get_node(host=first.host, port=first.port)
                if asked is None:
                    raise first
            elif isinstance(first, TryAgainError):
                await asyncio.sleep(0.05)
            elif isinstance(first, NoScriptError):  # a node that never ran it, e.g. a replica just promoted
                await node.execute_command("SCRIPT", "LOAD", script.script)
            else:
                error = next((r for r in replies if isinstance(r, Exception)), None)
                if error is not None:
                    raise error
                return replies
        raise ClusterError("TTL exhausted.")

    async def publish(self, channel: Any, message: Any) -> Any:
        """``SPUBLISH``: to the channel's slot's nodes only (channels carry the tag; ``shared.sharded_pubsub``)."""
        return await self.execute_command(keys.publish_command(), channel, message)

    def pubsub(self, **kwargs: Any) -> PubSub:
        """A sharded subscription (``shared.sharded_pubsub``) to this namespace's channels, on a connection that,
        on each (re)connection, goes to a node that is up: the slot's owner first (``_pubsub_addresses``), the one
        it lost last tried last. When the slot moves or its node dies, the subscriber is back on the slot's new
        owner at its next reconnect (the API's hub and the workers' wake-up listener reconnect on their own)."""
        slot = self._slot()  # of the shard this call works on (``keys.on_shard``): its own pool
        pool = self._pubsub_pools.get(slot)
        if pool is None:
            pool = ConnectionPool(**self._pubsub_kwargs, addresses=functools.partial(self._pubsub_addresses, slot))
            self._pubsub_pools[slot] = pool
        redirect = functools.partial(self._redirected, slot)
        return ShardedPubSub(pool, slot=slot, locate=self.initialize, redirect=redirect, **kwargs)

    def _slot(self) -> int:
        """The slot of the namespace's shard this call works on (``keys.on_shard``; shard 0 outside one)."""
        tag = keys.shard_tag(self.default_queue_name, keys.current_shard(), self.shards)
        return key_slot(tag.encode())

    def _redirected(self, slot: int, host: str, port: int) -> None:
        """A ``MOVED`` named the slot's owner: the next pub/sub connection goes there first."""
        self._moved_to[slot] = (host, port)

    def _pubsub_addresses(self, slot: int | None = None) -> list[tuple[str, int]]:
        """The slot's owner as a ``MOVED`` last named it, the primary that holds this namespace's slot in this
        client's layout, then the URL's node, then the nodes this client knows now (its layout is re-read after a
        failover), then its start-up nodes: with redis-py's default ``dynamic_startup_nodes`` those are every node
        it found. A sharded subscription is accepted only by the slot's owner; any other node answers with a
        redirection (``MOVED``, or ``CLUSTERDOWN`` mid-failover), after which the subscriber connects again."""
        manager = self.nodes_manager
        slot = self._slot() if slot is None else slot
        first = [self._moved_to[slot]] if slot in self._moved_to else []
        # No layout read yet, or the slot uncovered mid-failover: the URL's node first.
        with contextlib.suppress(RedisError, KeyError):
            owner = manager.get_node_from_slot(slot)
            first.append((str(owner.host), int(owner.port)))
        url = (str(self._pubsub_kwargs["host"]), int(self._pubsub_kwargs["port"]))
        known = [*manager.nodes_cache.values(), *manager.startup_nodes.values()]
        ordered = [*first, url, *((str(n.host), int(n.port)) for n in known)]
        return list(dict.fromkeys(ordered))


def _cluster_kwargs(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """What every node's connections get, and what the pub/sub node's pool gets (with its address)."""
    target = _target(settings)
    node = dict(target.kwargs)
    node.pop("db", None)
    host, port = node.pop("host", "localhost"), int(node.pop("port", 6379))
    connection = AsyncClusterPubSubSSLConnection if target.tls else AsyncClusterPubSubConnection
    pubsub = dict(node) | {"host": host, "port": port, "connection_class": connection}
    tls = {k: node.pop(k) for k in list(node) if k.startswith("ssl_")}
    cluster = node | {"host": host, "port": port}
    if target.tls:
        cluster |= {"ssl": True} | tls
    return cluster, pubsub


def _cluster_client(settings: Settings, *, patient: bool, max_connections: int | None = None) -> ArqRedis:
    """A ``RelayCluster`` for ``settings`` (see the module docstring), typed as the ``ArqRedis`` it stands in for."""
    keys.use_layout(settings.queue_name, cluster=True, shards=settings.queue_shards)
    cluster, pubsub = _cluster_kwargs(settings)
    retry_on = PATIENT_RETRY_ON if patient else API_RETRY_ON
    connect = async_retry.Retry(ExponentialBackoff(cap=1.0, base=0.05), CONNECT_RETRIES if patient else 1)
    client = RelayCluster(  # type: ignore[abstract]  # redis-py types connection_pool, which a cluster lacks
        queue_name=settings.queue_name,
        shards=settings.queue_shards,
        pubsub_kwargs=pubsub,
        retry=connect,
        retry_on_error=list(retry_on),
        cluster_error_retry_attempts=CLUSTER_RETRIES if patient else 1,
        retry_budget=RETRY_BUDGET_SECONDS if patient else 0.0,
        max_connections=max_connections or 2**31,
        **cluster,
    )
    return cast(ArqRedis, client)


def api_client(settings: Settings) -> ArqRedis:
    """The API's client: bounded pool, fail fast (see module docstring). Connects lazily: no I/O here."""
    if settings.redis_cluster:
        return _cluster_client(settings, patient=False, max_connections=settings.redis_max_connections)
    return _arq_client(settings, _async_pool(settings, _fail_fast_policy(), bounded=True))


def worker_client(settings: Settings) -> ArqRedis:
    """A worker's arq pool: every command retried through restarts and failovers. Connects lazily."""
    if settings.redis_cluster:
        return _cluster_client(settings, patient=True)
    return _arq_client(settings, _async_pool(settings, _patient_policy(), bounded=False))


def stop_retrying_at(client: AsyncRedis, moment: float) -> None:
    """From ``moment`` (``time.monotonic()``) on, ``client`` retries no command (``redis_pools.Cutoff``), in
    flight or to come: a stopping worker gives Redis until then, not ``RETRY_BUDGET_SECONDS`` per command.
    Each command still gets one attempt, so a Redis that answers still hears a worker's last words."""
    if isinstance(client, RelayCluster):
        client.cutoff.at = moment
        return
    pool = getattr(client, "connection_pool", None)
    retry = pool.connection_kwargs.get("retry") if pool is not None else None
    if isinstance(retry, AsyncBudgetRetry):
        retry.cutoff.at = moment


def probe_client(settings: Settings) -> ArqRedis:
    """A client that tries each command exactly once: for start-up probes and health checks, where
    one attempt must mean one attempt (and one log line), not a hidden retry loop."""
    if settings.redis_cluster:
        client = _cluster_client(settings, patient=False)
        cast(RelayCluster, client).cluster_error_retry_attempts = 0
        return client
    policy = {"retry": async_retry.Retry(NoBackoff(), 0), "retry_on_error": []}
    return _arq_client(settings, _async_pool(settings, policy, bounded=False))


def sync_client(settings: Settings) -> redis.Redis:
    """A synchronous client for threads (e.g. renewing job leases), as patient as ``worker_client``."""
    if settings.redis_cluster:
        keys.use_layout(settings.queue_name, cluster=True, shards=settings.queue_shards)
        cluster, _ = _cluster_kwargs(settings)
        retry = sync_retry.Retry(ExponentialBackoff(cap=1.0, base=0.05), CONNECT_RETRIES)
        sync_cluster = _SyncRelayCluster(  # type: ignore[abstract]  # as RelayCluster
            queue_name=settings.queue_name,
            retry=retry,
            retry_on_error=list(PATIENT_RETRY_ON),
            cluster_error_retry_attempts=CLUSTER_RETRIES,
            **cluster,
        )
        cluster_nodes.guard(sync_cluster.nodes_manager)
        return cast(redis.Redis, sync_cluster)
    target = _target(settings)
    kwargs = target.kwargs | {"retry": SyncBudgetRetry(RETRY_BUDGET_SECONDS), "retry_on_error": list(PATIENT_RETRY_ON)}
    pool: redis.ConnectionPool
    if target.sentinels:
        manager = sync_sentinel.Sentinel(target.sentinels, sentinel_kwargs=_sentinel_kwargs(settings))  # type: ignore[no-untyped-call]
        connection = SyncSentinelSSLConnection if target.tls else SyncSentinelConnection
        pool = sync_sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
            target.master, manager, is_master=True, connection_class=connection, **kwargs
        )
    else:
        connection_class: type[redis.connection.AbstractConnection] = (
            redis.UnixDomainSocketConnection if target.unix else redis.SSLConnection if target.tls else redis.Connection
        )
        pool = redis.ConnectionPool(connection_class=connection_class, **kwargs)
    return redis.Redis.from_pool(pool)


async def connect_fail_fast(settings: Settings) -> ArqRedis:
    """The bridge's client: commands fail fast (the bridge retries and abandons by itself) but a dropped
    connection or a demoted primary is retried once on a fresh one. Returns once Redis answers."""
    await wait_until_reachable(settings, "bridge")
    if settings.redis_cluster:
        return _cluster_client(settings, patient=False)
    return _arq_client(settings, _async_pool(settings, _fail_fast_policy(), bounded=False))


@dataclasses.dataclass
class RelayRedisSettings(RedisSettings):
    """arq's ``RedisSettings`` that also carries Relay's settings, so ``worker.connect`` can build the
    worker's pool with ``worker_client`` (arq's own ``create_pool`` would drop Sentinel's password, the
    timeouts, the retries and, through Sentinel, the TLS options)."""

    relay: Settings | None = None


def redis_settings(config: Settings) -> RedisSettings:
    """What ``worker.settings`` hands arq. Valid for arq's own ``create_pool`` too (minus the above)."""
    target = _target(config)
    kwargs = target.kwargs
    common: dict[str, Any] = {
        "database": kwargs.get("db", 0),
        "username": kwargs.get("username"),
        "password": kwargs.get("password"),
        "ssl": target.tls,
        "ssl_ca_certs": kwargs.get("ssl_ca_certs"),
        "ssl_check_hostname": bool(kwargs.get("ssl_check_hostname", False)),
        "conn_timeout": max(1, round(config.redis_timeout_seconds)),
        "retry": AsyncBudgetRetry(RETRY_BUDGET_SECONDS),
        "retry_on_error": list(PATIENT_RETRY_ON),
        "relay": config,
    }
    if target.sentinels:
        return RelayRedisSettings(host=target.sentinels, sentinel=True, sentinel_master=target.master, **common)
    if target.unix:
        return RelayRedisSettings(unix_socket_path=kwargs["path"], **common)
    return RelayRedisSettings(host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379), **common)


STARTUP_FIRST_DELAY_SECONDS = 0.5
STARTUP_MAX_DELAY_SECONDS = 5.0


async def wait_until_reachable(settings: Settings, who: str, attempts: int | None = None) -> None:
    """Return once Redis answers PING; until then log ONE line per attempt (no traceback) and back off
    from 0.5 s to 5 s. ``attempts=None`` waits forever; otherwise the last failure is raised."""
    delay = STARTUP_FIRST_DELAY_SECONDS
    attempt = 0
    while True:
        attempt += 1
        client = probe_client(settings)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            if attempts is not None and attempt >= attempts:
                raise
            logger.warning(
                "%s: Redis at %s not usable (attempt %d, next in %.1fs): %s",
                who,
                describe(settings),
                attempt,
                delay,
                _one_line(exc),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, STARTUP_MAX_DELAY_SECONDS)
            continue
        finally:
            await close(client)
        if attempt > 1:
            logger.info("%s: Redis at %s answers after %d attempts", who, describe(settings), attempt)
        return


async def close(client: AsyncRedis) -> None:
    """Close ``client``, its pool and, through Sentinel, its connections to the sentinels (which redis-py's
    ``aclose`` leaves open)."""
    if isinstance(client, RelayCluster):
        await client.close()
        return
    await client.aclose(close_connection_pool=True)
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", []):
        await sentinel.aclose()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# A keyless script with a shebang and no flags is one Redis treats as "may write": it is refused with
# READONLY on a replica, OOM over maxmemory, NOREPLICAS under min-replicas-to-write, BUSY and LOADING,
# which is exactly "would an enqueue be accepted now". PING passes in all of those states.
_WRITE_PROBE = "#!lua\nreturn 1"


async def _node_of(client: AsyncRedis, key: str) -> dict[str, Any]:
    """How to send a keyless command to the server that holds ``key``: on a cluster, ``target_nodes`` (else the
    client picks any node); on one Redis, nothing."""
    if not isinstance(client, RelayCluster):
        return {}
    await client.initialize()  # the slots are known once the client has read the cluster's layout
    return {"target_nodes": client.get_node_from_key(key)}


async def server_time(client: AsyncRedis, key: str) -> tuple[int, int]:
    """``TIME`` (seconds, microseconds) of the server that holds ``key``: on a cluster, the clock the scripts of
    that key's namespace read."""
    if isinstance(client, RelayCluster):
        seconds, micros = await client.execute_command("TIME", **await _node_of(client, key))
    else:
        seconds, micros = await client.time()
    return int(seconds), int(micros)


async def check_writable(client: AsyncRedis, key: str = "") -> None:
    """Raise the error Redis would give a write right now (nothing is written); on a cluster, the primary that
    holds ``key``. Redis < 7 has no script flags: there, only reachability is checked."""
    try:
        await client.execute_command("EVAL", _WRITE_PROBE, 0, **await _node_of(client, key))  # type: ignore[no-untyped-call]
    except ResponseError as exc:
        if "compiling" not in str(exc):  # Redis 6 reads the shebang as Lua and fails to compile it
            raise
        await client.ping()
