"""Sending a task's events over an open HTTP response, shared by ``GET .../events`` and ``POST /tasks``."""

from __future__ import annotations

import logging

from sanic import Request

from api.follow import FollowOptions, follow_subscribed
from api.formats import StreamFormat, encode
from api.hub import Subscription
from api.resources import Resources
from shared.enqueue import Prepared, Submitted

logger = logging.getLogger("relay.api.stream")


def stream_headers(task_id: str) -> dict[str, str]:
    """Headers that keep proxies from buffering a live stream."""
    return {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Relay-Task-Id": task_id}


async def send_stream(request: Request, res: Resources, task_id: str, after_seq: int, fmt: StreamFormat) -> None:
    """Stream events after ``after_seq`` until the task's ``end`` (or a reconnect hint when draining)."""
    async with res.hub.subscribe(task_id) as sub:
        await _stream(request, res, sub, task_id, after_seq, fmt, replay_first=True)


async def submit_and_stream(
    request: Request, res: Resources, prepared: Prepared, fmt: StreamFormat, location: str
) -> Submitted:
    """Subscribe, then enqueue, then stream: a task created here needs no replay, since nothing of it can have
    been published before the subscription. A refused submit raises before any byte is sent (a JSON error)."""
    async with res.hub.subscribe(prepared.task_id) as sub:
        submitted = await res.enqueuer.enqueue(prepared)
        extra = {"Location": location}
        await _stream(request, res, sub, prepared.task_id, 0, fmt, replay_first=not submitted.created, extra=extra)
    return submitted


async def _stream(
    request: Request,
    res: Resources,
    sub: Subscription,
    task_id: str,
    after_seq: int,
    fmt: StreamFormat,
    replay_first: bool,
    extra: dict[str, str] | None = None,
) -> None:
    async def repair_end() -> bool:
        return await res.transitions.repair_end(task_id)

    options = FollowOptions(res.settings.heartbeat_seconds, res.settings.api_drain_seconds)
    response = await request.respond(content_type=fmt.value, headers=stream_headers(task_id) | (extra or {}))
    res.streams.opened()
    try:
        await response.send(b"")  # flush the headers now: the first event may be minutes away
        async for frame in follow_subscribed(sub, res.events, task_id, after_seq, options, repair_end, replay_first):
            await response.send(encode(frame, fmt, task_id))
        await response.eof()
    finally:
        res.streams.closed()
