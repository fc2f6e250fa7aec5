"""``/tasks``: submit (optionally streaming the events back on the same response), read, list, abort, retry."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import msgspec
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api import waiting
from api.access import Caller, caller, list_prefix, may_see, public_task_id, require, stored_task_id
from api.errors import Draining, InvalidRequest, MalformedJson, NotAbortable, NotRetryable, TaskNotFound
from api.formats import wants_stream
from api.observe import trace_carrier
from api.resources import Resources, resources
from api.sharding import on_shard_of
from api.streaming import stream_slot, submit_and_stream
from shared import keys, tenancy, tracing
from shared.apikeys import NAME_PATTERN, Role
from shared.enqueue import Submitted, prepare
from shared.ids import new_id
from shared.limits import check_args_size
from shared.serialization import dumps
from shared.status import LANE, task_view
from shared.tasklist import BadCursor, list_tasks
from shared.tasks import TaskState, TaskSubmission, is_task_name
from shared.transitions import AbortOutcome, RetryOutcome
from shared.waiting import raise_lost_cancel

bp = Blueprint("tasks")
MAX_PAGE = 500
logger = logging.getLogger("relay.api")


def links(task_id: str) -> dict[str, str]:
    """Where to read a task's state and its events."""
    return {"self": f"/tasks/{task_id}", "events": f"/tasks/{task_id}/events"}


def checked_id(request: Request, task_id: str) -> str:
    """The stored id of the task a path id names for this caller: an id that cannot name one of the
    caller's tasks (malformed, or another tenant's) is simply not found (``api.access``)."""
    return stored_task_id(caller(request), task_id)


def parse_submission(body: bytes) -> TaskSubmission:
    """JSON first (400 if it is not JSON), then the schema (422)."""
    return TaskSubmission.model_validate(json_object(body, '{"task": "echo"}'))


def json_object(body: bytes, example: str) -> dict[str, Any]:
    """A request body that must be one JSON object: 400 if it is not JSON, 422 if it is not an object."""
    if not body:
        raise MalformedJson(f"the body is empty: send a JSON object such as {example}")
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise MalformedJson("the body is not UTF-8") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", [{"loc": [], "msg": "expected an object"}])
    return data


def _submitted_body(submitted: Submitted, task_id: str, urls: dict[str, str]) -> dict[str, object]:
    return {
        "id": task_id,
        "task": submitted.task,
        "state": submitted.state.value,
        "created": submitted.created,
        "links": urls,
    }


@bp.post("/tasks")
async def submit(request: Request) -> HTTPResponse | None:
    """Enqueue a task: 202 with its id and links (200 if this id was already submitted identically).
    With ``Accept: application/x-ndjson`` or ``text/event-stream`` the events follow on this response."""
    who = require(request, Role.SUBMIT)
    res = resources(request)
    if res.draining:
        raise Draining("this API process is shutting down; retry on another", headers={"Retry-After": "1"})
    submission = parse_submission(request.body)
    check_args_size(submission, res.settings.max_args_bytes)
    if keys.shard_count() == 1:
        return await _submit(request, who, res, submission)
    # Several shards: the id first, so the task's record names the inbox of the task's shard (``api.shardhub``).
    task_id = submission.id or new_id()
    submission = submission if submission.id else submission.model_copy(update={"id": task_id})
    with keys.on_task_shard(tenancy.stored_id(who.tenant, task_id)):
        return await _submit(request, who, res, submission)


async def _submit(request: Request, who: Caller, res: Resources, submission: TaskSubmission) -> HTTPResponse | None:
    offer = await res.catalogue.get(submission.task)
    fmt = wants_stream(request.headers.get("accept", ""))
    inbox = res.hub.inbox if fmt is not None else None  # its events come back on this process's own channel
    prepared = prepare(offer, res.settings, submission, tenant=who.tenant, inbox=inbox)
    prepared = tracing.with_carrier(prepared, trace_carrier(request))
    task_id = public_task_id(who, prepared.task_id)
    urls = links(task_id)
    location = urls["self"]
    if fmt is None and res.quotas.unlimited:  # most submits: no stream slot and no quota to hold meanwhile
        submitted = await res.enqueuer.enqueue(prepared)
        res.metrics.key_submitted(request.ctx.key_name)
    else:
        # Limits first, cheapest first, so a refusal leaves nothing behind: the stream slot, then the key's quotas.
        with stream_slot(res) if fmt is not None else nullcontext():
            async with res.quotas.admit(request.ctx.key_name, prepared.task_id):
                if fmt is not None:
                    await submit_and_stream(request, res, prepared, fmt, location, task_id)
                    raise_lost_cancel()  # see api.streaming.ends_with_its_connection
                    return None
                submitted = await res.enqueuer.enqueue(prepared)
    logger.debug(
        "submit %s: task %s, created=%s, %s", submitted.task_id, submitted.task, submitted.created, submitted.state
    )
    # The body encoded here, as JSON's bytes (ids and names are ASCII: the same bytes Sanic's json() wrote).
    return HTTPResponse(
        dumps(_submitted_body(submitted, task_id, urls)),
        status=202 if submitted.created else 200,
        headers={"Location": location},
        content_type="application/json",
    )


@bp.get("/tasks")
async def list_route(request: Request) -> HTTPResponse:
    """Recent tasks, newest first: ``?state=&task=&limit=&cursor=``, and for an admin ``&tenant=``."""
    who = caller(request)
    res = resources(request)
    state, task, tenant = request.args.get("state"), request.args.get("task"), request.args.get("tenant")
    if tenant is not None and not NAME_PATTERN.fullmatch(tenant):
        raise InvalidRequest("tenant must be an API key name", [{"loc": ["query", "tenant"], "msg": "not a name"}])
    prefix = list_prefix(who, tenant)
    if state is not None and state not in {s.value for s in TaskState if s is not TaskState.UNKNOWN}:
        raise InvalidRequest(f"unknown state {state[:50]!r}", [{"loc": ["query", "state"], "msg": "not a state"}])
    if task is not None and not is_task_name(task):
        raise InvalidRequest("task must be a task name", [{"loc": ["query", "task"], "msg": "not a task name"}])
    limit = _limit(request.args.get("limit"))
    try:
        page = await list_tasks(
            res.pool,
            res.scripts,
            res.settings.queue_name,
            state=state,
            task=task,
            limit=limit,
            cursor=request.args.get("cursor"),
            timeout_for=res.timeout_for,
            prefix=prefix,
            seal=res.cursor_seal,
        )
    except BadCursor as exc:
        raise InvalidRequest(str(exc), [{"loc": ["query", "cursor"], "msg": str(exc)}]) from None
    visible = [view for view in page.tasks if may_see(who, view["id"])]
    reasons = await waiting.reasons(res.catalogue, res.scripts, res.settings.queue_name, visible)
    tasks = [_public_view(who, view | {"waiting_reason": why}) for view, why in zip(visible, reasons, strict=True)]
    return json({"tasks": tasks, "next_cursor": page.next_cursor})


def _limit(raw: str | None) -> int:
    if raw is None:
        return 50
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be 1..{MAX_PAGE}", [{"loc": ["query", "limit"], "msg": "out of range"}])
    return limit


def _public_view(who: Caller, view: dict[str, Any]) -> dict[str, Any]:
    """A task's view as ``who`` sees it: by the id it knows, and which tenant owns it."""
    task_id = public_task_id(who, view["id"])
    shown = {k: v for k, v in view.items() if k != LANE}
    return shown | {"id": task_id, "tenant": tenancy.owner(view["id"]), "links": links(task_id)}


@bp.get("/tasks/<task_id:str>")
@on_shard_of("task_id", checked_id)
async def get_task(request: Request, task_id: str) -> HTTPResponse:
    """State, tries, timestamps, and result or error."""
    res = resources(request)
    view = await _view(res, checked_id(request, task_id), task_id)
    return json(_public_view(caller(request), view))


async def _view(res: Resources, stored_id: str, task_id: str) -> dict[str, Any]:
    view = await task_view(res.pool, res.settings.queue_name, stored_id, res.timeout_for)
    if view is None:
        message = f"no task {task_id!r} (never submitted, or its record expired)"
        raise TaskNotFound(message, {"state": TaskState.UNKNOWN.value})
    return view | {"waiting_reason": await waiting_reason(res, view)}


async def waiting_reason(res: Resources, view: dict[str, Any]) -> str | None:
    """Why a waiting task is not running yet, when that is not just its turn (``api.waiting``)."""
    return await waiting.reason(res.catalogue, res.scripts, res.settings.queue_name, view)


@bp.delete("/tasks/<task_id:str>")
@on_shard_of("task_id", checked_id)
async def delete_task(request: Request, task_id: str) -> HTTPResponse:
    """Abort: 200 ``aborted`` for a waiting task, 202 ``aborting`` for a running one; either way its child tasks
    (``ctx.submit``), and theirs, are aborted too (``children``: how many were still waiting or running). An ended
    task is 409 (its children are left alone, unless it ended aborted: then they are stopped again)."""
    require(request, Role.SUBMIT)
    res = resources(request)
    stored_id = checked_id(request, task_id)
    done = await res.transitions.abort(stored_id)
    if done.outcome == AbortOutcome.UNKNOWN:
        raise TaskNotFound(f"no task {task_id!r}", {"state": TaskState.UNKNOWN.value})
    if done.outcome == AbortOutcome.FINISHED:
        if done.state == TaskState.ABORTED:  # aborted before: finish stopping its children (a first walk may have
            await res.transitions.abort_children([stored_id])  # stopped half-way), and answer as before
        raise NotAbortable(f"task {task_id!r} has already ended ({done.state})", {"state": done.state})
    children = await res.transitions.abort_children([stored_id])
    status = 200 if done.outcome == AbortOutcome.ABORTED else 202
    return json({"id": task_id, "state": done.outcome, "children": children, "links": links(task_id)}, status=status)


@bp.post("/tasks/<task_id:str>/retry")
@on_shard_of("task_id", checked_id)
async def retry_task(request: Request, task_id: str) -> HTTPResponse:
    """Run a failed or aborted task again, same id and arguments; its events continue."""
    require(request, Role.SUBMIT)
    res = resources(request)
    if res.draining:
        raise Draining("this API process is shutting down; retry on another", headers={"Retry-After": "1"})
    stored_id = checked_id(request, task_id)
    async with res.quotas.admit(request.ctx.key_name, stored_id):  # a new run counts like a submit
        done = await res.transitions.retry(stored_id, trace_carrier(request))
        if done.outcome == RetryOutcome.UNKNOWN:
            raise TaskNotFound(f"no task {task_id!r}", {"state": TaskState.UNKNOWN.value})
        if done.outcome == RetryOutcome.WORKFLOW_STEP:
            workflow = task_id.rsplit(":", 1)[0]
            raise NotRetryable(
                f"task {task_id!r} is a step of workflow {workflow!r}: retry the workflow "
                f"(POST /workflows/{workflow}/retry), which runs it and what follows it",
                {"state": done.state, "workflow": workflow},
            )
        if done.outcome == RetryOutcome.NOT_RETRYABLE:
            why = "it has not ended" if done.state not in ("succeeded",) else "it succeeded"
            raise NotRetryable(f"task {task_id!r} cannot be retried: {why} ({done.state})", {"state": done.state})
    view = await _view(res, stored_id, task_id)
    body = {"id": task_id, "task": view["task"], "state": done.outcome, "created": False, "links": links(task_id)}
    return json(body, status=202, headers={"Location": links(task_id)["self"]})
