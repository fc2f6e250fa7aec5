"""``GET /tasks/{id}/events``: replay then live events, as NDJSON or Server-Sent Events."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty

from api.errors import ApiError, InvalidRequest, TaskNotFound
from api.formats import negotiate
from api.resources import resources
from api.routes.tasks import checked_id
from api.sharding import on_shard_of
from api.streaming import ends_with_its_connection, send_stream
from shared.events import FINAL_TYPE, decode_head
from shared.status import task_view

bp = Blueprint("events")


class NotAcceptable(ApiError):
    status, code = 406, "not_acceptable"


# The largest resume point: a log's entries are numbered as Redis stream ids (``0-<seq>``, ``shared.events``),
# whose parts are 64-bit; one past this, Redis refused the read and the client was told to reconnect, for ever.
MAX_RESUME_POINT = 2**63 - 1


def resume_point(request: Request) -> int:
    """Where to resume: SSE's ``Last-Event-ID`` header, or ``?after=`` for NDJSON clients."""
    value = request.headers.get("last-event-id") or request.args.get("after") or "0"
    try:
        after = int(value)
    except ValueError:
        raise InvalidRequest("Last-Event-ID / after must be an event sequence number") from None
    if after < 0:
        raise InvalidRequest("Last-Event-ID / after must not be negative")
    if after > MAX_RESUME_POINT:
        raise InvalidRequest(f"Last-Event-ID / after must be at most {MAX_RESUME_POINT}")
    return after


@bp.get("/tasks/<task_id:str>/events")
@ends_with_its_connection
@on_shard_of("task_id", checked_id)
async def task_events(request: Request, task_id: str) -> HTTPResponse | None:
    """404 for an unknown task; 204 when the client already has the final event (stops SSE retries)."""
    res = resources(request)
    fmt = negotiate(request.headers.get("accept", ""))
    if fmt is None:
        raise NotAcceptable("this endpoint serves application/x-ndjson or text/event-stream")
    after = resume_point(request)
    stored_id = checked_id(request, task_id)
    last = await res.events.last(stored_id)
    if last is None and await task_view(res.pool, res.settings.queue_name, stored_id) is None:
        raise TaskNotFound(f"no task {task_id!r}", {"state": "unknown"})
    if last is not None and last[0] <= after and decode_head(last[1]).type == FINAL_TYPE:
        return empty(status=204)
    await send_stream(request, res, stored_id, after, fmt, task_id)
    return None
