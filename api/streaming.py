"""Sending a task's events over an open HTTP response, shared by ``GET .../events`` and ``POST /tasks``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sanic import Request

from api.follow import FollowOptions, follow
from api.formats import StreamFormat, encode
from api.resources import Resources
from shared.events import FINAL_TYPE, EventType, decode_head
from shared.status import is_final, task_view

logger = logging.getLogger("relay.api.stream")

# A result stored this long ago without an ``end`` event means the worker died before publishing it.
END_REPAIR_AFTER_SECONDS = 5.0


def stream_headers(task_id: str) -> dict[str, str]:
    """Headers that keep proxies from buffering a live stream."""
    return {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Relay-Task-Id": task_id}


async def send_stream(
    request: Request,
    res: Resources,
    task_id: str,
    after_seq: int,
    fmt: StreamFormat,
    status: int = 200,
    extra_headers: dict[str, str] | None = None,
) -> None:
    """Stream events after ``after_seq`` until the task's ``end`` (or a reconnect hint when draining)."""

    async def repair_end() -> bool:
        return await publish_missing_end(res, task_id)

    options = FollowOptions(res.settings.heartbeat_seconds, res.settings.api_drain_seconds)
    response = await request.respond(
        status=status, content_type=fmt.value, headers=stream_headers(task_id) | (extra_headers or {})
    )
    res.streams.opened()
    logger.debug("stream of %s opened (%s, after seq %d); %d open", task_id, fmt.name, after_seq, res.streams.count)
    frames, last = 0, "none"
    try:
        await response.send(b"")  # flush the headers now: the first event may be minutes away
        async for frame in follow(res.hub, res.events, task_id, after_seq, options, repair_end):
            await response.send(encode(frame, fmt, task_id))
            frames, last = frames + 1, frame.type or frame.kind.value
        await response.eof()
    finally:
        res.streams.closed()
        logger.debug(
            "stream of %s closed after %d frames (last: %s); %d open", task_id, frames, last, res.streams.count
        )


async def publish_missing_end(res: Resources, task_id: str) -> bool:
    """If the task has an outcome but its log has no ``end`` (its worker died in between), publish one."""
    view = await task_view(res.pool, res.settings.queue_name, task_id)
    if view is None:
        await res.events.publish(task_id, EventType.END, {"state": "unknown"})
        return True
    if not is_final(view):
        return False
    last = await res.events.last(task_id)
    if last is not None and decode_head(last[1]).type == FINAL_TYPE:
        return True
    finished = datetime.fromisoformat(view["finished_at"]).timestamp() if view["finished_at"] else 0
    if datetime.now(UTC).timestamp() - finished < END_REPAIR_AFTER_SECONDS:
        return False
    logger.warning("task %s finished without an end event; publishing it", task_id)
    data = view["result"] if view["state"] == "succeeded" else view["error"]
    kind = EventType.RESULT if view["state"] == "succeeded" else EventType.ERROR
    if view["state"] != "aborted":
        await res.events.publish(task_id, kind, data)
    await res.events.publish(task_id, EventType.END, {"state": view["state"]})
    return True
