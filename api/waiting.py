"""Why a waiting task is not running yet, in words for ``GET /tasks/{id}``, the task list and the dashboard.

Its turn is not a reason (a due task in a busy queue waits for a free slot, and that says nothing); these are:
no live worker runs its task on its named queue (workers claim only what they serve, so it waits for one), its
concurrency limit is full, its rate limit holds it, or higher-priority work of its queue is due before it. The
first comes from the live workers' offers (cached, ``shared.catalogue``); the others from one short script
(``why.lua``) that reads the limit's state on Redis's clock, only for a task that is due.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared import keys, lanes
from shared.catalogue import Catalogue, TaskOffer
from shared.scripts import Scripts
from shared.tasks import TaskState

# Why-questions of one page in flight at once: a few connections of the pool, not one per distinct lane.
CONCURRENT_QUESTIONS = 8
WAITING_STATES = (TaskState.QUEUED.value, TaskState.DEFERRED.value, TaskState.RETRYING.value)


async def reason(catalogue: Catalogue, scripts: Scripts, queue_name: str, view: dict[str, Any]) -> str | None:
    """Why the task of ``view`` (a ``shared.status`` view with its ``lane``) waits, or None."""
    if view["state"] not in WAITING_STATES:
        return None
    task, queue = view["task"], view.get("queue", lanes.DEFAULT_QUEUE)
    if not await catalogue.serves(task, queue):
        where = "" if queue == lanes.DEFAULT_QUEUE else f" on queue {queue!r}"
        return f"waiting for a worker that runs {task!r}{where}"
    if view["state"] != TaskState.QUEUED.value:
        return None
    offer = catalogue.cached(task)
    lane = view.get("lane") or lanes.lane_id(task, queue, view.get("priority", 0), None)
    return await _held(scripts, queue_name, lane, offer)


async def reasons(
    catalogue: Catalogue, scripts: Scripts, queue_name: str, views: list[dict[str, Any]]
) -> list[str | None]:
    """``reason`` for each view of a page, asked once per distinct lane and a few at a time: a page of 500
    jobs of one lane costs one ``why.lua`` call, not 500 in a row."""
    same = [_same_answer(view) for view in views]
    questions = {key: view for key, view in zip(same, views, strict=True) if key is not None}
    at_once = asyncio.Semaphore(CONCURRENT_QUESTIONS)

    async def ask(view: dict[str, Any]) -> str | None:
        async with at_once:
            with keys.on_task_shard(view["id"]):  # its lane is in its shard (shared/keys.py)
                return await reason(catalogue, scripts, queue_name, view)

    answers = dict(zip(questions, await asyncio.gather(*map(ask, questions.values())), strict=True))
    return [None if key is None else answers[key] for key in same]


def _same_answer(view: dict[str, Any]) -> tuple[Any, ...] | None:
    """What ``reason`` depends on for this view (None: a state that never waits, so no question to ask)."""
    if view["state"] not in WAITING_STATES:
        return None
    lane = (view["state"], view["task"], view.get("queue"), view.get("priority"), view.get("lane"))
    return (*lane, keys.shard_of(view["id"]))  # a lane of each shard is its own (shared/keys.py)


async def _held(scripts: Scripts, queue_name: str, lane: str, offer: TaskOffer | None) -> str | None:
    concurrency = (offer.concurrency if offer else None) or {}
    rate = (offer.rate if offer else None) or {}
    running_max = int(concurrency.get("running") or 0)
    interval = float(rate.get("per_seconds") or 0) * 1000 / int(rate["starts"]) if rate.get("starts") else 0.0
    args: list[str | int] = [lane, running_max, f"{interval:.3f}", int(rate.get("burst") or 1)]
    kind, *detail = await scripts.why(keys=[keys.schedule(queue_name)], args=args)
    parts = lanes.parse(lane)
    key_value, _, rate_value = parts.part.partition("/")
    if kind == b"concurrency":
        key = concurrency.get("key")
        per = f" for {key}={key_value}" if key else ""
        return f"concurrency limit full: {int(detail[0])} running{per}"
    if kind == b"rate":
        key = rate.get("key")
        per = f" for {key}={rate_value}" if key else ""
        return f"rate limited: {rate['starts']} per {float(rate['per_seconds']):g}s{per}"
    if kind == b"priority":
        return "behind higher-priority work"
    return None
