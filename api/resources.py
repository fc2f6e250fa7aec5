"""The per-process resources every handler uses, created at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

from arq.connections import ArqRedis
from sanic import Request, Sanic
from sanic.config import Config

from api.hub import PubSubHub
from api.metrics import ApiMetrics
from api.quotas import Quotas
from shared.apikeys import ANONYMOUS, parse_api_keys
from shared.catalogue import Catalogue
from shared.enqueue import Enqueuer
from shared.events import EventLog
from shared.redis import connect_fail_fast
from shared.scripts import Scripts
from shared.settings import Settings
from shared.transitions import Transitions

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
        try:
            await asyncio.wait_for(self._idle.wait(), within_seconds)
        except TimeoutError:
            return False
        return True


@dataclass
class Resources:
    """Lives on ``app.ctx.res``: no state here that another API process would need."""

    settings: Settings
    catalogue: Catalogue
    pool: ArqRedis
    events: EventLog
    hub: PubSubHub
    scripts: Scripts
    enqueuer: Enqueuer
    transitions: Transitions
    metrics: ApiMetrics
    quotas: Quotas
    draining: bool = False
    streams: StreamCounter = field(default_factory=lambda: StreamCounter())

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        """Connect to Redis (retrying while it starts) and start the pub/sub hub."""
        pool = await connect_fail_fast(settings)
        catalogue = Catalogue(pool, settings.queue_name)
        events = EventLog(pool, max_len=settings.event_log_max_len, ttl_seconds=settings.result_ttl_seconds)
        hub = PubSubHub(pool)
        await hub.start()
        scripts = Scripts(pool)
        enqueuer = Enqueuer(pool, settings, scripts)
        transitions = Transitions(pool, scripts, settings)
        metrics = ApiMetrics()
        key_names = [key.name for key in parse_api_keys(settings.api_keys.get_secret_value())] or [ANONYMOUS]
        quotas = Quotas(pool, settings, metrics, key_names)
        return cls(settings, catalogue, pool, events, hub, scripts, enqueuer, transitions, metrics, quotas)

    def timeout_for(self, name: str) -> float | None:
        """The timeout a task of this name runs with when its submit names none (as its workers last said)."""
        offer = self.catalogue.cached(name)
        return offer.timeout_seconds if offer else None

    async def close(self) -> None:
        """Close the hub, then the pool."""
        await self.hub.close()
        await self.pool.aclose(close_connection_pool=True)


def resources(request: Request) -> Resources:
    """The resources of the app serving ``request``."""
    res: Resources = request.app.ctx.res
    return res
