"""What a worker shows of itself: its metrics server, its presence record, and its tracer provider.

``worker.setup`` calls ``start`` once the engine exists and ``stop`` at shutdown; nothing here touches a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from redis.exceptions import RedisError

from shared import presence, tracing
from shared.config_errors import refuse
from shared.settings import Settings
from shared.waiting import wait_set

if TYPE_CHECKING:
    from worker.engine.engine import Engine

logger = logging.getLogger("relay.worker")
CLOCK_SYNC_SECONDS = 60.0  # an idle worker reads Redis's clock this often for its presence (shared.presence)

OBSERVE_CTX_KEY = "relay_observe"


@dataclass
class Observers:
    """What ``start`` set up, for ``stop``."""

    server: WSGIServer | None = None
    server_thread: threading.Thread | None = None
    presence_task: asyncio.Task[None] | None = None
    exporting: tracing.Exporting | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


def serve_metrics(engine: Engine, settings: Settings) -> tuple[WSGIServer, threading.Thread] | None:
    """This worker's ``/metrics`` on ``RELAY_WORKER_METRICS_PORT`` (none for 0), from a thread of its own,
    so a scrape is answered even while a task blocks the event loop. A busy port stops the worker with one
    line: a second worker on this host needs a port of its own."""
    port, host = settings.worker_metrics_port, settings.worker_metrics_host
    if port == 0:
        logger.info("metrics: off (RELAY_WORKER_METRICS_PORT=0)")
        return None
    try:
        served = start_http_server(port, addr=host, registry=engine.metrics.registry)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        problem = (
            f"RELAY_WORKER_METRICS_PORT={port} is invalid: port {port} is already in use on {host} (another "
            "worker on this host?); give each worker its own port, or 0 for no metrics server"
        )
        refuse([problem])
    logger.info("metrics: http://%s:%d/metrics", host, port)
    return served


async def start(ctx: dict[str, Any], settings: Settings, engine: Engine) -> None:
    """Metrics server, presence record, and Relay's own tracer provider when ``RELAY_TRACE_EXPORTER`` asks."""
    observers = ctx[OBSERVE_CTX_KEY] = Observers()
    observers.exporting = tracing.configure(settings, "relay-worker")
    served = serve_metrics(engine, settings)
    if served is not None:
        observers.server, observers.server_thread = served
    facts = {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "started_ms": int(time.time() * 1000),
        "concurrency": settings.worker_concurrency,
        "metrics_port": settings.worker_metrics_port or None,
        "catalogue": engine.catalogue_digest,  # what it runs (shared.catalogue)
        "queues": settings.queue_list,  # the named queues it serves, in order
    }
    await engine.sync_clock()
    await presence.publish(engine.pool, settings.queue_name, engine.token, _doing(engine, facts), engine.redis_now_ms())
    observers.presence_task = asyncio.create_task(_present(engine, settings, facts, observers.stopping))


async def stop(ctx: dict[str, Any]) -> None:
    """Leave a last presence record, stop the metrics server, flush the spans still batched."""
    observers: Observers | None = ctx.get(OBSERVE_CTX_KEY)
    if observers is None:
        return
    observers.stopping.set()
    if observers.presence_task is not None:
        with contextlib.suppress(Exception):
            await observers.presence_task
    if observers.server is not None:
        await asyncio.to_thread(observers.server.shutdown)  # waits for its serve loop (up to 0.5 s)
        observers.server.server_close()
    if observers.exporting is not None:
        await asyncio.to_thread(observers.exporting.shutdown)


def _doing(engine: Engine, facts: dict[str, Any]) -> dict[str, Any]:
    runs = list(engine.runs.values())
    running = [
        {"id": run.task_id, "task": run.spec.name, "started_ms": run.started_ms}
        for run in runs[: presence.MAX_RUNNING_SHOWN]
    ]
    totals = dict(engine.metrics.totals)
    return facts | {"running": len(runs), "running_tasks": running, "stopping": engine.shutting_down, "totals": totals}


async def _present(engine: Engine, settings: Settings, facts: dict[str, Any], stopping: asyncio.Event) -> None:
    """Refresh the presence record every few seconds until stopped, then say it stopped."""
    queue, warned = settings.queue_name, False
    while not stopping.is_set():
        try:
            await engine.sync_clock(older_than_seconds=CLOCK_SYNC_SECONDS)
            await presence.publish(engine.pool, queue, engine.token, _doing(engine, facts), engine.redis_now_ms())
            warned = False
        except (RedisError, OSError) as exc:
            if not warned:  # once per outage: the poll loop already says Redis is away
                logger.warning("presence not refreshed: %s", exc)
                warned = True
        await wait_set(stopping, presence.REFRESH_SECONDS)
    with contextlib.suppress(RedisError, OSError):  # the last word: it stopped (its offers stay a while)
        stopped = _doing(engine, facts) | {"stopped": True}
        await presence.publish(engine.pool, queue, engine.token, stopped, engine.redis_now_ms())
