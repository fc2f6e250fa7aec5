"""``GET /stats``: what the dashboard shows at a glance, in one call: the queue's gauges and the live workers."""

from __future__ import annotations

import datetime as dt

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.metrics import queue_counts
from api.resources import resources
from shared import presence

bp = Blueprint("stats")


@bp.get("/stats")
async def stats(request: Request) -> HTTPResponse:
    """The queue (due, deferred, running, as in ``/metrics``) and the workers heard of lately."""
    res = resources(request)
    due, deferred, running = await queue_counts(res)
    workers = await presence.read(res.pool, res.settings.queue_name)
    now = dt.datetime.now(dt.UTC).isoformat()
    queue = {"name": res.settings.queue_name, "due": due, "deferred": deferred, "running": running}
    return json({"queue": queue, "workers": workers, "time": now})
