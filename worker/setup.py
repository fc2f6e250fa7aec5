"""Builds the pieces ``worker.settings`` hands to arq: functions, Redis settings and lifecycle hooks."""

from __future__ import annotations

import logging
import socket
from typing import Any

from arq.worker import Function

from shared.events import EventLog
from shared.logs import configure as configure_logging
from shared.redis import public_url, redis_settings
from shared.serialization import dumps, loads
from shared.settings import Settings, get_settings
from worker import resilience
from worker.runner import BRIDGE_CTX_KEY, EVENTS_CTX_KEY, QUEUE_CTX_KEY, job_function, publish_outcome
from worker.tasks import registry
from worker.wakeup import WakeupListener

__all__ = [
    "HEALTH_CHECK_INTERVAL_SECONDS",
    "after_job_end",
    "dumps",
    "functions",
    "health_check_key",
    "loads",
    "on_shutdown",
    "on_startup",
    "redis_settings",
    "settings",
]

logger = logging.getLogger("relay.worker")

WAKEUP_CTX_KEY = "relay_wakeup"

# arq --check passes while the health key is younger than this (+1 s): keeps liveness probes meaningful.
HEALTH_CHECK_INTERVAL_SECONDS = 10


def settings() -> Settings:
    """The process settings."""
    return get_settings()


def health_check_key(config: Settings) -> str:
    """Per host (per pod), so ``arq --check worker.settings`` checks this worker, not any on the queue."""
    return f"{config.queue_name}:health-check:{socket.gethostname()}"


def functions(config: Settings) -> list[Function]:
    """One arq function per registered task."""
    return [job_function(spec, config.job_timeout_seconds, config.max_tries) for spec in registry]


async def on_startup(ctx: dict[str, Any]) -> None:
    """Give every job the event log (one per process, on arq's own Redis pool)."""
    configure_logging()
    config = get_settings()
    ctx[EVENTS_CTX_KEY] = EventLog(
        ctx["redis"], max_len=config.event_log_max_len, ttl_seconds=config.result_ttl_seconds
    )
    resilience.install()
    ctx[QUEUE_CTX_KEY] = config.queue_name
    listener = ctx[WAKEUP_CTX_KEY] = WakeupListener(ctx["redis"], config.queue_name)
    await listener.start()
    if config.servicebus_enabled:
        from worker.bridge.service import ServiceBusBridge  # the SDK loads only where it is used

        ctx[BRIDGE_CTX_KEY] = await ServiceBusBridge.start(config, registry)
    where = public_url(config.redis_url)  # said at start, so a worker on the wrong Redis is not silent
    logger.info(
        "relay worker ready: %d tasks on queue %s, using Redis at %s", len(list(registry)), config.queue_name, where
    )


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Stop the bridge and the wake-up subscription (the event log rides on arq's pool, closed by arq)."""
    bridge = ctx.get(BRIDGE_CTX_KEY)
    if bridge is not None:
        await bridge.stop()
    listener: WakeupListener | None = ctx.get(WAKEUP_CTX_KEY)
    if listener is not None:
        await listener.close()


async def after_job_end(ctx: dict[str, Any]) -> None:
    """Publish the final events once arq has stored the result."""
    await publish_outcome(ctx)
