"""Startup and graceful shutdown of an API process.

On SIGTERM/SIGINT Sanic runs ``before_server_stop`` while it still serves: readiness turns false and
new submits get 503 at once, open streams get ``RELAY_API_DRAIN_SECONDS`` for their task to end and then
a ``reconnect`` event, and only when they are all closed are the hub and the Redis pool closed.
"""

from __future__ import annotations

import gc
import logging

from api.resources import RelayApp, Resources
from shared.redis import public_url
from shared.settings import get_settings

logger = logging.getLogger("relay.api")

# Time allowed, past the drain period, for the last reconnect events to be written.
CLOSE_MARGIN_SECONDS = 2.0


async def open_resources(app: RelayApp) -> None:
    """``before_server_start``: build the Redis pool and hub; they connect in the background, so the
    process serves (liveness, 503s) even while Redis is down. No task code: the live workers publish theirs."""
    settings = get_settings()
    app.ctx.res = await Resources.open(settings)
    logger.info("relay api started: using Redis at %s, queue %s", public_url(settings.redis_url), settings.queue_name)


async def freeze_startup_objects(app: RelayApp) -> None:
    """``after_server_start``: the ~80,000 objects of the loaded code and settings live as long as the process, so
    they leave the garbage collector's care (``gc.freeze``): a full collection under submit load paused the API
    for about 40 ms each time, walking them all, and now walks only what requests left behind."""
    gc.collect()
    gc.freeze()


async def drain(app: RelayApp) -> None:
    """``before_server_stop``: refuse new work, let open streams finish or hand them a reconnect hint."""
    res: Resources = app.ctx.res
    res.draining = True
    res.hub.drain()
    if res.streams.count:
        logger.info("draining %d open streams", res.streams.count)
    if not await res.streams.wait_idle(res.settings.api_drain_seconds + CLOSE_MARGIN_SECONDS):
        logger.warning("%d streams still open after the drain period", res.streams.count)


async def close_resources(app: RelayApp) -> None:
    """``after_server_stop``: close the hub and the Redis pool."""
    res: Resources | None = getattr(app.ctx, "res", None)
    if res is not None:
        await res.close()
