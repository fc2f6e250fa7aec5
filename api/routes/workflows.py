"""``/workflows``: submit a canvas (optionally streaming its events back), read its tree, follow its one stream,
cancel it, retry it from its failed steps (``shared.workflows``; docs/workflows.md)."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.access import Caller, caller, list_prefix, public_task_id, public_workflow_event, require, stored_task_id
from api.errors import ApiError, Draining, InvalidRequest, NotAbortable, NotRetryable
from api.formats import negotiate, wants_stream
from api.resources import Resources, resources
from api.routes.events import NotAcceptable, resume_point
from api.routes.tasks import _limit, json_object
from api.sharding import on_shard_of
from api.streaming import Followed, ends_with_its_connection, send_followed, stream_slot, submit_then_stream
from shared import keys, tenancy
from shared.apikeys import NAME_PATTERN, Role
from shared.events import EventType, decode_head
from shared.tasklist import BadCursor
from shared.workflows.canvas import WorkflowSubmission
from shared.workflows.store import PreparedWorkflow, WorkflowSubmitted, prepare_workflow

bp = Blueprint("workflows")
logger = logging.getLogger("relay.api")
FINAL = EventType.WORKFLOW_END.value


class WorkflowNotFound(ApiError):
    status, code = 404, "workflow_not_found"


def links(flow_id: str) -> dict[str, str]:
    """Where to read a workflow's tree and its events."""
    return {"self": f"/workflows/{flow_id}", "events": f"/workflows/{flow_id}/events"}


def checked_id(request: Request, flow_id: str) -> str:
    """The stored id of the workflow a path id names for this caller (``api.access``: tenants' rules)."""
    try:
        return stored_task_id(caller(request), flow_id)
    except ApiError:
        raise _not_found(flow_id) from None


def _not_found(flow_id: str) -> WorkflowNotFound:
    return WorkflowNotFound(f"no workflow {flow_id[:130]!r} (never submitted, or its record expired)")


def parse_workflow(body: bytes) -> WorkflowSubmission:
    """JSON first (400 if it is not JSON), then the canvas's schema (422)."""
    return WorkflowSubmission.model_validate(json_object(body, '{"workflow": {"chain": [...]}}'))


def _submitted_body(submitted: WorkflowSubmitted, public_id: str) -> dict[str, Any]:
    return {
        "id": public_id,
        "state": submitted.state,
        "steps": submitted.steps,
        "created": submitted.created,
        "links": links(public_id),
    }


def followed(res: Resources, who: Caller, stored_id: str, public_id: str) -> Followed:
    """A workflow's stream: its log, to its ``workflow_end``."""

    async def nothing_to_repair() -> bool:
        return False  # a workflow's end is written with its last step's, in one script

    return Followed(
        stored_id,
        public_id,
        res.flow_events,
        FINAL,
        nothing_to_repair,
        lambda raw: public_workflow_event(raw, who),
        "X-Relay-Workflow-Id",
    )


@bp.post("/workflows")
@ends_with_its_connection
async def submit(request: Request) -> HTTPResponse | None:
    """Submit a workflow: 202 with its id and links (200 if this id was already submitted with this canvas).
    With ``Accept: application/x-ndjson`` or ``text/event-stream`` its events follow on this response."""
    who = require(request, Role.SUBMIT)
    res = resources(request)
    if res.draining:
        raise Draining("this API process is shutting down; retry on another", headers={"Retry-After": "1"})
    prepared = await prepare_workflow(parse_workflow(request.body), res.catalogue.get, res.settings, who.tenant)
    with keys.on_task_shard(prepared.flow_id):  # its steps are in its shard (shared/keys.py)
        return await _submit(request, who, res, prepared)


async def _submit(request: Request, who: Caller, res: Resources, prepared: PreparedWorkflow) -> HTTPResponse | None:
    public_id = public_task_id(who, prepared.flow_id)
    location = links(public_id)["self"]
    fmt = wants_stream(request.headers.get("accept", ""))
    # A workflow counts against the key's quota of tasks not yet ended as its first step does.
    with stream_slot(res) if fmt is not None else nullcontext():
        async with res.quotas.admit(request.ctx.key_name, prepared.first_step):
            if fmt is not None:

                async def run() -> bool:
                    return (await res.workflows.submit(prepared)).created

                target = followed(res, who, prepared.flow_id, public_id)
                await submit_then_stream(request, res, target, run, fmt, location)
                return None
            submitted = await res.workflows.submit(prepared)
    logger.debug("workflow %s: %d steps, created=%s", prepared.flow_id, submitted.steps, submitted.created)
    body = _submitted_body(submitted, public_id)
    return json(body, status=202 if submitted.created else 200, headers={"Location": location})


@bp.get("/workflows")
async def list_route(request: Request) -> HTTPResponse:
    """Recent workflows, newest first (``?limit=&cursor=``; an admin may add ``&tenant=``), each with its state."""
    who = caller(request)
    res = resources(request)
    tenant = request.args.get("tenant")
    if tenant is not None and not NAME_PATTERN.fullmatch(tenant):
        raise InvalidRequest("tenant must be an API key name", [{"loc": ["query", "tenant"], "msg": "not a name"}])
    limit, cursor = _limit(request.args.get("limit")), request.args.get("cursor")
    try:
        found, next_cursor = await res.workflows.list_page(list_prefix(who, tenant), limit, cursor, res.cursor_seal)
    except BadCursor as exc:
        raise InvalidRequest(str(exc), [{"loc": ["query", "cursor"], "msg": str(exc)}]) from None
    shown = []
    for stored, state, steps in found:
        public_id = public_task_id(who, stored)
        item = {"id": public_id, "state": state, "steps": steps}
        shown.append(item | {"tenant": tenancy.owner(stored), "links": links(public_id)})
    return json({"workflows": shown, "next_cursor": next_cursor})


@bp.get("/workflows/<flow_id:str>")
@on_shard_of("flow_id", checked_id)
async def get_workflow(request: Request, flow_id: str) -> HTTPResponse:
    """The workflow's state, its tree with each step's state, and its result or error once ended."""
    who = caller(request)
    res = resources(request)
    view = await res.workflows.view(checked_id(request, flow_id))
    if view is None:
        raise _not_found(flow_id)
    return json(_public_view(who, view))


def _public_view(who: Caller, view: dict[str, Any]) -> dict[str, Any]:
    """The view with the ids the caller knows."""

    def rename(node: dict[str, Any]) -> dict[str, Any]:
        shown = dict(node)
        if "task_id" in shown:
            shown["task_id"] = public_task_id(who, shown["task_id"])
            shown["links"] = {"self": f"/tasks/{shown['task_id']}", "events": f"/tasks/{shown['task_id']}/events"}
        if "children" in shown:
            shown["children"] = [rename(child) for child in shown["children"]]
        if "callback" in shown:
            shown["callback"] = rename(shown["callback"])
        return shown

    public_id = public_task_id(who, view["id"])
    error = view["error"]
    if isinstance(error, dict) and error.get("task_id"):
        error = error | {"task_id": public_task_id(who, error["task_id"])}
    owner = tenancy.owner(view["id"])
    shown = {"id": public_id, "tenant": owner, "error": error, "tree": rename(view["tree"])}
    return view | shown | {"links": links(public_id)}


@bp.get("/workflows/<flow_id:str>/events")
@ends_with_its_connection
@on_shard_of("flow_id", checked_id)
async def workflow_events(request: Request, flow_id: str) -> HTTPResponse | None:
    """Every step's events, tagged with its step, and the workflow's own (replay, then live; ``Last-Event-ID``
    or ``?after=``); 404 for an unknown workflow, 204 when the client already has ``workflow_end``."""
    res = resources(request)
    fmt = negotiate(request.headers.get("accept", ""))
    if fmt is None:
        raise NotAcceptable("this endpoint serves application/x-ndjson or text/event-stream")
    after = resume_point(request)
    stored_id = checked_id(request, flow_id)
    last = await res.flow_events.last(stored_id)
    if last is None and not await res.pool.exists(keys.flow(stored_id)):
        raise _not_found(flow_id)
    if last is not None and last[0] <= after and decode_head(last[1]).type == FINAL:
        return empty(status=204)
    await send_followed(request, res, followed(res, caller(request), stored_id, flow_id), after, fmt)
    return None


@bp.delete("/workflows/<flow_id:str>")
@on_shard_of("flow_id", checked_id)
async def cancel_workflow(request: Request, flow_id: str) -> HTTPResponse:
    """Cancel: no further step starts, waiting steps are aborted at once and running ones by their workers, and
    so are its steps' child tasks (``children``: how many were waiting or running); 200 ``aborted`` once no step is
    left running, else 202 ``aborting``."""
    require(request, Role.SUBMIT)
    res = resources(request)
    outcome, state, children = await res.workflows.cancel(checked_id(request, flow_id))
    if outcome == "unknown":
        raise _not_found(flow_id)
    if outcome == "finished":
        raise NotAbortable(f"workflow {flow_id!r} has already ended ({state})", {"state": state})
    status = 200 if outcome == "aborted" else 202
    return json({"id": flow_id, "state": outcome, "children": children, "links": links(flow_id)}, status=status)


@bp.post("/workflows/<flow_id:str>/retry")
@on_shard_of("flow_id", checked_id)
async def retry_workflow(request: Request, flow_id: str) -> HTTPResponse:
    """Run a failed or aborted workflow again from the steps that failed (its succeeded steps are kept)."""
    require(request, Role.SUBMIT)
    res = resources(request)
    if res.draining:
        raise Draining("this API process is shutting down; retry on another", headers={"Retry-After": "1"})
    stored_id = checked_id(request, flow_id)
    counted_as = await res.workflows.step_to_retry(stored_id)
    async with res.quotas.admit(request.ctx.key_name, counted_as):  # a new run counts like a submit
        outcome, state = await res.workflows.retry(stored_id)
        if outcome == "unknown":
            raise _not_found(flow_id)
        if outcome == "not_retryable":
            raise NotRetryable(f"workflow {flow_id!r} cannot be retried: it is {state}", {"state": state})
    return json({"id": flow_id, "state": "running", "links": links(flow_id)}, status=202)
