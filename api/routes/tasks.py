"""``/tasks``: submit (optionally streaming the events back on the same response), read, abort."""

from __future__ import annotations

import re

import msgspec
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.abort import AbortOutcome, abort_task
from api.errors import Draining, InvalidRequest, MalformedJson, NotAbortable, TaskNotFound
from api.formats import wants_stream
from api.resources import resources
from api.streaming import send_stream
from shared import durability
from shared.enqueue import Submitted, enqueue_task
from shared.status import task_view
from shared.tasks import TASK_ID_PATTERN, TaskSubmission

bp = Blueprint("tasks")
_task_id = re.compile(TASK_ID_PATTERN)


def links(task_id: str) -> dict[str, str]:
    """Where to read a task's state and its events."""
    return {"self": f"/tasks/{task_id}", "events": f"/tasks/{task_id}/events"}


def checked_id(task_id: str) -> str:
    """A path id that cannot name a task is simply not found."""
    if not _task_id.match(task_id):
        raise TaskNotFound(f"no task {task_id[:130]!r}")
    return task_id


def parse_submission(body: bytes) -> TaskSubmission:
    """JSON first (400 if it is not JSON), then the schema (422)."""
    try:
        data = msgspec.json.decode(body or b"")
    except msgspec.DecodeError as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise MalformedJson("the body is not UTF-8") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", [{"loc": [], "msg": "expected an object"}])
    return TaskSubmission.model_validate(data)


def _submitted_body(submitted: Submitted) -> dict[str, object]:
    return {
        "id": submitted.task_id,
        "task": submitted.task,
        "state": submitted.state.value,
        "created": submitted.created,
        "links": links(submitted.task_id),
    }


@bp.post("/tasks")
async def submit(request: Request) -> HTTPResponse | None:
    """Enqueue a task: 202 with its id and links (200 if this id was already submitted identically).
    With ``Accept: application/x-ndjson`` or ``text/event-stream`` the events follow on this response."""
    res = resources(request)
    if res.draining:
        raise Draining("this API process is shutting down; retry on another", headers={"Retry-After": "1"})
    submission = parse_submission(request.body)
    async with durability.pinned(res.pool, res.settings) as client:  # one connection when WAIT is on
        submitted = await enqueue_task(client, res.registry, res.settings, submission)
        await durability.confirm(client, res.settings, submitted.task_id)
    location = links(submitted.task_id)["self"]
    fmt = wants_stream(request.headers.get("accept", ""))
    if fmt is not None:
        await send_stream(request, res, submitted.task_id, 0, fmt, extra_headers={"Location": location})
        return None
    return json(_submitted_body(submitted), status=202 if submitted.created else 200, headers={"Location": location})


@bp.get("/tasks/<task_id:str>")
async def get_task(request: Request, task_id: str) -> HTTPResponse:
    """State, tries, timestamps, and result or error."""
    res = resources(request)
    view = await task_view(res.pool, res.settings.queue_name, checked_id(task_id))
    if view is None:
        raise TaskNotFound(f"no task {task_id!r} (never submitted, or its record expired)", {"state": "unknown"})
    return json(view | {"links": links(task_id)})


@bp.delete("/tasks/<task_id:str>")
async def delete_task(request: Request, task_id: str) -> HTTPResponse:
    """Abort: 200 ``aborted`` for a queued task, 202 ``aborting`` for a running one."""
    res = resources(request)
    outcome = await abort_task(
        res.pool, res.events, res.settings.queue_name, checked_id(task_id), res.settings.result_ttl_seconds
    )
    if outcome is AbortOutcome.UNKNOWN:
        raise TaskNotFound(f"no task {task_id!r}", {"state": "unknown"})
    if outcome is AbortOutcome.FINISHED:
        raise NotAbortable(f"task {task_id!r} has already finished")
    status = 200 if outcome is AbortOutcome.ABORTED else 202
    return json({"id": task_id, "state": outcome.value, "links": links(task_id)}, status=status)
