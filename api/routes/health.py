"""Ping, liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, raw

from api.metrics import render_metrics
from api.openapi import document
from api.resources import resources
from shared.redis_pools import PoolExhausted

bp = Blueprint("health")
logger = logging.getLogger("relay.api")


@bp.get("/")
async def ping(request: Request) -> HTTPResponse:
    """A ping that proves the process answers."""
    return json({"service": "relay", "ping": "pong"})


@bp.get("/health/live")
async def live(request: Request) -> HTTPResponse:
    """Liveness: the event loop answers. Never depends on Redis (a Redis outage must not restart pods)."""
    return json({"status": "ok"})


@bp.get("/health/ready")
async def ready(request: Request) -> HTTPResponse:
    """Readiness: connected, Redis answers, and the process is not draining (a full pool is still ready)."""
    res = resources(request)
    if res.draining:
        return json({"status": "draining"}, status=503)
    if res.unsupported is not None:  # said in the log, once (``Resources._connect``)
        return json({"status": "redis_unsupported"}, status=503)
    if not res.connected.is_set():
        return json({"status": "redis_unavailable", "detail": "not connected to Redis yet"}, status=503)
    try:
        await res.pool.ping()
    except PoolExhausted:
        pass  # busy, not broken: taking the process out of rotation would only shift the load
    except (RedisError, OSError) as exc:
        # The detail (host, port, reason) is for the operator's log, not for whoever can reach this route.
        logger.warning("not ready: Redis does not answer: %s", exc)
        return json({"status": "redis_unavailable"}, status=503)
    return json({"status": "ready"})


@bp.get("/openapi.json")
async def openapi_document(request: Request) -> HTTPResponse:
    """The OpenAPI 3.1 description of this API, with each task the live workers offer."""
    return json(document(await resources(request).catalogue.offers()))


@bp.get("/metrics")
async def metrics(request: Request) -> HTTPResponse:
    """Prometheus text format, including ``relay_queue_due`` for worker autoscaling."""
    body, content_type = await render_metrics(resources(request))
    return raw(body, content_type=content_type)
