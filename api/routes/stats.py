"""``GET /stats``: what the dashboard shows at a glance, in one call: the queue's gauges and the live workers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.access import Caller, caller, may_see, public_task_id
from api.metrics import queue_counts
from api.resources import resources
from shared import presence

bp = Blueprint("stats")


def _seen_by(who: Caller, worker: dict[str, Any]) -> dict[str, Any]:
    """A worker as ``who`` sees it: of the tasks it runs, only those ``who`` may see, by the ids it knows them by
    (counts by task name stay whole: they name no task)."""
    runs = [
        run | {"id": public_task_id(who, run["id"])}
        for run in worker["running_tasks"]
        if isinstance(run["id"], str) and may_see(who, run["id"])
    ]
    return worker | {"running_tasks": runs}


@bp.get("/stats")
async def stats(request: Request) -> HTTPResponse:
    """The queue (due, deferred, running, as in ``/metrics``; and the waiting jobs per task, with why they wait
    when no live worker runs their task) and the workers heard of lately."""
    res = resources(request)
    counts = await queue_counts(res)
    who = caller(request)
    workers = [_seen_by(who, worker) for worker in await presence.read(res.pool, res.settings.queue_name)]
    offers = await res.catalogue.offers()
    tasks = [
        {
            "task": name,
            "due": task.due,
            "deferred": task.deferred,
            "waiting_reason": None if name in offers else f"waiting for a worker that runs {name!r}",
        }
        for name, task in sorted(counts.tasks.items())
    ]
    now = dt.datetime.now(dt.UTC).isoformat()
    queue = {"name": res.settings.queue_name, "due": counts.due, "deferred": counts.deferred, "running": counts.running}
    served = {str(q) for worker in workers for q in worker.get("queues") or ["default"]}
    queues = [
        {"name": name, "due": c.due, "deferred": c.deferred, "running": c.running}
        for name, c in sorted(counts.queues.items())
    ]
    queues += [{"name": name, "due": 0, "deferred": 0, "running": 0} for name in sorted(served - set(counts.queues))]
    return json({"queue": queue, "queues": queues, "tasks": tasks, "workers": workers, "time": now})
