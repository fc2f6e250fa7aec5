"""Sending a task's events over an open HTTP response, shared by ``GET .../events`` and ``POST /tasks``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime

from sanic import Request

from api.errors import TooManyStreams
from api.follow import FollowOptions, follow
from api.formats import StreamFormat, encode
from api.resources import Resources
from shared.events import FINAL_TYPE, EventType, decode_head
from shared.status import is_final, task_view

logger = logging.getLogger("relay.api.stream")

# A result stored this long ago without an ``end`` event means the worker died before publishing it.
END_REPAIR_AFTER_SECONDS = 5.0


# Another API process (or this one, a moment later) likely has room.
STREAMS_RETRY_AFTER_SECONDS = 2


@contextmanager
def stream_slot(res: Resources) -> Iterator[None]:
    """Hold one of this process's ``RELAY_MAX_STREAMS`` stream slots, or refuse with 503 too_many_streams.
    Taken before anything else happens (``POST /tasks`` takes it before the enqueue, so a refused
    stream leaves no task behind) and held until the stream ends."""
    if not res.streams.try_open(res.settings.max_streams):
        res.metrics.streams_refused.inc()
        raise TooManyStreams(
            f"this API process serves {res.settings.max_streams} streams, its maximum (RELAY_MAX_STREAMS); "
            "retry shortly",
            headers={"Retry-After": str(STREAMS_RETRY_AFTER_SECONDS)},
        )
    try:
        yield
    finally:
        res.streams.closed()


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
    slot_held: bool = False,
) -> None:
    """Stream events after ``after_seq`` until the task's ``end`` (or a reconnect hint when draining).
    Takes a stream slot unless the caller already holds one (``slot_held``)."""

    async def repair_end() -> bool:
        return await publish_missing_end(res, task_id)

    options = FollowOptions(res.settings.heartbeat_seconds, res.settings.api_drain_seconds)
    with nullcontext() if slot_held else stream_slot(res):
        response = await request.respond(
            status=status, content_type=fmt.value, headers=stream_headers(task_id) | (extra_headers or {})
        )
        await response.send(b"")  # flush the headers now: the first event may be minutes away
        async for frame in follow(res.hub, res.events, task_id, after_seq, options, repair_end):
            await response.send(encode(frame, fmt, task_id))
        await response.eof()


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
