"""The per-process resources every handler uses, created at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

from arq.connections import ArqRedis
from cryptography.fernet import Fernet
from redis.exceptions import RedisError
from sanic import Request, Sanic
from sanic.config import Config

from api.hub import PubSubHub
from api.metrics import ApiMetrics
from api.quotas import Quotas
from api.shardhub import ShardedHubs
from shared import keys
from shared.apikeys import ANONYMOUS, parse_api_keys, tenant_names
from shared.catalogue import Catalogue
from shared.cluster_version import primaries_too_old, refusal
from shared.enqueue import Enqueuer
from shared.events import EventLog
from shared.ids import new_id
from shared.redis import RelayCluster, api_client, close, describe, wait_until_reachable
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasklist import cursor_seal
from shared.transitions import Transitions
from shared.waiting import cancel_and_wait, wait_set
from shared.workflows.store import Workflows

logger = logging.getLogger("relay.api")

RelayApp = Sanic[Config, SimpleNamespace]


class StreamCounter:
    """Open streams of this process, so a drain can wait until the last one has closed."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def opened(self) -> None:
        self.count += 1
        self._idle.clear()

    def try_open(self, limit: int) -> bool:
        """Count one more stream unless ``limit`` are open already (no await in between: exact)."""
        if self.count >= limit:
            return False
        self.opened()
        return True

    def closed(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, within_seconds: float) -> bool:
        """True if every stream closed within ``within_seconds``."""
        return await wait_set(self._idle, within_seconds)


@dataclass
class Resources:
    """Lives on ``app.ctx.res``: no state here that another API process would need."""

    settings: Settings
    catalogue: Catalogue
    pool: ArqRedis
    events: EventLog
    hub: PubSubHub | ShardedHubs  # one per shard of the queue (``api.shardhub``) when it has several
    scripts: Scripts
    enqueuer: Enqueuer
    transitions: Transitions
    metrics: ApiMetrics
    quotas: Quotas
    workflows: Workflows
    flow_events: EventLog  # workflows' logs (``keys.flow_events``)
    cursor_seal: Fernet | None  # seals GET /tasks cursors when API keys are configured (``shared.tasklist``)
    draining: bool = False
    streams: StreamCounter = field(default_factory=lambda: StreamCounter())
    connected: asyncio.Event = field(default_factory=asyncio.Event)  # Redis answered and the hub runs
    unsupported: str | None = None  # why this Redis cannot serve Relay (a cluster primary older than 7.0)
    _connector: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        """Build the pool and the hub without touching Redis, and connect in the background: the process
        serves at once (liveness, and 503s from routes that need Redis) whether Redis is up or not. No task
        code is loaded: the live workers publish what they run (``shared.catalogue``)."""
        pool = api_client(settings)
        scripts = Scripts(pool)
        metrics = ApiMetrics()
        key_names = tenant_names(parse_api_keys(settings.api_keys.get_secret_value())) or [ANONYMOUS]
        transitions = Transitions(pool, scripts, settings)
        res = cls(
            settings,
            Catalogue(pool, settings.queue_name),
            pool,
            EventLog(pool, max_len=settings.event_log_max_len, ttl_seconds=settings.result_ttl_seconds),
            _hub(pool, settings),
            scripts,
            Enqueuer(pool, settings, scripts),
            transitions,
            metrics,
            Quotas(pool, settings, metrics, key_names),
            Workflows(pool, scripts, settings, transitions),
            EventLog(
                pool,
                max_len=settings.workflow_log_max_len,
                ttl_seconds=settings.result_ttl_seconds,
                stream=keys.flow_events,
            ),
            cursor_seal(settings.api_key_list()),
        )
        res._connector = asyncio.create_task(res._connect(), name="relay-redis-connect")
        return res

    def timeout_for(self, name: str) -> float | None:
        """The timeout a task of this name runs with when its submit names none (as its workers last said)."""
        offer = self.catalogue.cached(name)
        return offer.timeout_seconds if offer else None

    async def _connect(self) -> None:
        """Wait for Redis (one log line per attempt), then start the hub, which reconnects by itself after."""
        while True:
            await wait_until_reachable(self.settings, "API")
            try:
                if isinstance(self.pool, RelayCluster) and (too_old := await primaries_too_old(self.pool)):
                    self.unsupported = refusal(too_old)
                    logger.error("API: not ready, and never will be on this Redis: %s", self.unsupported)
                    return
                await self.hub.start()
            except (RedisError, OSError) as exc:  # Redis went away again between the two
                logger.warning("API: pub/sub hub could not start (%s); retrying", exc)
                continue
            self.connected.set()
            logger.info("API: connected to Redis at %s", describe(self.settings))
            return

    async def close(self) -> None:
        """Stop connecting, close the hub, then the pool."""
        if self._connector is not None:
            await cancel_and_wait(self._connector)
        await self.catalogue.close()
        await self.hub.close()
        await close(self.pool)


def _hub(pool: ArqRedis, settings: Settings) -> PubSubHub | ShardedHubs:
    """The process's pub/sub hub: one per shard of the queue (``api.shardhub``) when it has several."""
    if keys.shard_count() > 1:
        return ShardedHubs(pool, settings.queue_name, new_id())
    return PubSubHub(pool, inbox=keys.inbox_channel(settings.queue_name, new_id()))


def resources(request: Request) -> Resources:
    """The resources of the app serving ``request``."""
    res: Resources = request.app.ctx.res
    return res
