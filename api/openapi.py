"""The OpenAPI 3.1 document, served at ``/openapi.json``.

Schemas come from the same pydantic models that validate requests (``shared.tasks``) and describe
responses (``api.schemas``), so the document cannot drift from what the code accepts. (sanic-ext's
generator was tried: it drops ``required``, ignores aliases and emits OpenAPI 3.0 with 3.1-style
nullables, which made a schema the fuzzer could not trust.)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.schemas import (
    AbortResult,
    ErrorBody,
    Ping,
    Stats,
    Status,
    SubmitResult,
    TaskPage,
    TaskView,
    WorkflowPage,
    WorkflowSubmitResult,
    WorkflowView,
)
from shared.apikeys import NAME_PATTERN
from shared.catalogue import TaskOffer
from shared.tasks import TASK_NAME_REGEX, TaskState, TaskSubmission
from shared.tenancy import STORED_ID_PATTERN
from shared.workflows.canvas import WorkflowSubmission

_ERRORS = {
    400: "The body is not JSON.",
    401: "Missing or wrong API key (only when keys are configured).",
    403: "The key's role does not allow this: a read key submitting, aborting or retrying, or a tenant's key "
    "listing another tenant's tasks (code forbidden).",
    404: "Unknown task. Another tenant's task answers exactly the same: a key sees only its tenant's tasks "
    "(an admin key sees every task).",
    406: "Neither NDJSON nor SSE is acceptable to the client.",
    409: "Conflicts with the task's id or state.",
    413: "Body too large (payload_too_large), or the task's arguments are (args_too_large).",
    422: "Valid JSON, invalid content: schema, task name, arguments or resume point.",
    429: "This API key's submit rate (rate_limited) or tasks not yet ended (quota_exceeded): see Retry-After.",
    503: "Redis unavailable, queue full, too many streams on this process, or draining (see Retry-After).",
}
_STREAM = {
    "application/x-ndjson": {"schema": {"type": "string", "description": "One event JSON object per line."}},
    "text/event-stream": {"schema": {"type": "string", "description": "SSE; each id is the event's seq."}},
}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def _reply(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, **({"content": content} if content else {})}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _reply(_ERRORS[s], _json(ErrorBody)) for s in statuses}


_STATES = [s.value for s in TaskState if s is not TaskState.UNKNOWN]
TASK_NAME_PATTERN = f"^{TASK_NAME_REGEX}$"
_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": STORED_ID_PATTERN},
    "description": "The id the task was submitted with. An admin key names another tenant's task as "
    "`<tenant>~<id>` (the id it sees in lists); a tenant's key only ever names its own tasks.",
}

_WORKFLOW_ID = _TASK_ID | {
    "name": "workflow_id",
    "description": "The id the workflow was submitted with (`<tenant>~<id>` for an admin naming a tenant's).",
}

_PATHS: dict[str, Any] = {
    "/": {"get": {"operationId": "ping", "summary": "Ping", "responses": {"200": _reply("Pong.", _json(Ping))}}},
    "/health/live": {
        "get": {
            "operationId": "live",
            "summary": "Liveness (never touches Redis)",
            "security": [],
            "responses": {"200": _reply("Alive.", _json(Status))},
        }
    },
    "/health/ready": {
        "get": {
            "operationId": "ready",
            "summary": "Readiness",
            "security": [],
            "responses": {
                "200": _reply("Ready.", _json(Status)),
                "503": _reply("Redis unreachable or draining.", _json(Status)),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {"200": _reply("Prometheus text format.", {"text/plain": {"schema": {"type": "string"}}})},
        }
    },
    "/stats": {
        "get": {
            "operationId": "stats",
            "summary": "The queue's gauges and the live workers (what the dashboard shows)",
            "responses": {"200": _reply("Queue and workers.", _json(Stats)), **_errors(401, 503)},
        }
    },
    "/tasks": {
        "get": {
            "operationId": "listTasks",
            "summary": "Recent tasks, newest first",
            "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "string", "enum": _STATES}},
                {"name": "task", "in": "query", "schema": {"type": "string", "pattern": TASK_NAME_PATTERN}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "tenant",
                    "in": "query",
                    "schema": {"type": "string", "pattern": NAME_PATTERN.pattern},
                    "description": "An admin key: only this tenant's tasks (without it, every task). Any other "
                    "key sees only its own tenant's tasks and may name only itself here.",
                },
            ],
            "responses": {"200": _reply("One page of tasks.", _json(TaskPage)), **_errors(401, 403, 422, 503)},
        },
        "post": {
            "operationId": "submitTask",
            "summary": "Submit a task",
            "description": "With Accept: application/x-ndjson or text/event-stream the task's events follow "
            "on this response.",
            "requestBody": {"required": True, "content": _json(TaskSubmission)},
            "responses": {
                "202": _reply("Enqueued.", _json(SubmitResult)),
                "200": _reply(
                    "Already submitted with this id and these arguments, or the event stream.",
                    _json(SubmitResult) | _STREAM,
                ),
                **_errors(400, 401, 403, 409, 413, 422, 429, 503),
            },
        },
    },
    "/tasks/{task_id}": {
        "get": {
            "operationId": "getTask",
            "summary": "Read a task's state",
            "parameters": [_TASK_ID],
            "responses": {"200": _reply("The task.", _json(TaskView)), **_errors(401, 404, 503)},
        },
        "delete": {
            "operationId": "abortTask",
            "summary": "Abort a task, and its child tasks (ctx.submit), recursively",
            "parameters": [_TASK_ID],
            "responses": {
                "200": _reply("Removed before it started.", _json(AbortResult)),
                "202": _reply("Its worker is cancelling it.", _json(AbortResult)),
                **_errors(401, 403, 404, 409, 503),
            },
        },
    },
    "/tasks/{task_id}/retry": {
        "post": {
            "operationId": "retryTask",
            "summary": "Run a failed or aborted task again (same id, same arguments; its events continue)",
            "parameters": [_TASK_ID],
            "responses": {"202": _reply("Queued again.", _json(SubmitResult)), **_errors(401, 403, 404, 409, 503)},
        }
    },
    "/tasks/{task_id}/events": {
        "get": {
            "operationId": "taskEvents",
            "summary": "Follow a task's events: replay, then live, until its end",
            "parameters": [
                _TASK_ID,
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Resume after this event sequence number.",
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "schema": {"type": "string"},
                    "description": "SSE resume point (an event sequence number).",
                },
            ],
            "responses": {
                "200": _reply("Events until the task's end event.", _STREAM),
                "204": _reply("The client already has the final event."),
                **_errors(401, 404, 406, 422, 503),
            },
        }
    },
}
# Workflows (issue #23; docs/workflows.md).
_PATHS |= {
    "/workflows": {
        "get": {
            "operationId": "listWorkflows",
            "summary": "Recent workflows, newest first",
            "parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {
                    "name": "tenant",
                    "in": "query",
                    "schema": {"type": "string", "pattern": NAME_PATTERN.pattern},
                },
            ],
            "responses": {"200": _reply("Workflows.", _json(WorkflowPage)), **_errors(401, 403, 422, 503)},
        },
        "post": {
            "operationId": "submitWorkflow",
            "summary": "Submit a workflow: a chain, group, chord or map of tasks (Celery's canvas)",
            "description": "With Accept: application/x-ndjson or text/event-stream the workflow's events "
            "follow on this response. Each step is validated against its task now, and runs as an ordinary "
            "task (id `<workflow id>:<step>`).",
            "requestBody": {"required": True, "content": _json(WorkflowSubmission)},
            "responses": {
                "202": _reply("Its first steps are enqueued.", _json(WorkflowSubmitResult)),
                "200": _reply(
                    "Already submitted with this id and canvas, or the event stream.",
                    _json(WorkflowSubmitResult) | _STREAM,
                ),
                **_errors(400, 401, 403, 409, 413, 422, 429, 503),
            },
        },
    },
    "/workflows/{workflow_id}": {
        "get": {
            "operationId": "getWorkflow",
            "summary": "A workflow's state and its tree, with each step's state",
            "parameters": [_WORKFLOW_ID],
            "responses": {"200": _reply("The workflow.", _json(WorkflowView)), **_errors(401, 404, 503)},
        },
        "delete": {
            "operationId": "cancelWorkflow",
            "summary": "Cancel a workflow: its waiting steps are aborted, its running ones cancelled, and its steps' "
            "child tasks too",
            "parameters": [_WORKFLOW_ID],
            "responses": {
                "200": _reply("Aborted (nothing was left running).", _json(AbortResult)),
                "202": _reply("Its running steps are being cancelled.", _json(AbortResult)),
                **_errors(401, 403, 404, 409, 503),
            },
        },
    },
    "/workflows/{workflow_id}/retry": {
        "post": {
            "operationId": "retryWorkflow",
            "summary": "Run a failed or aborted workflow again from its failed steps",
            "parameters": [_WORKFLOW_ID],
            "responses": {
                "202": _reply("Running again.", _json(AbortResult)),
                **_errors(401, 403, 404, 409, 503),
            },
        }
    },
    "/workflows/{workflow_id}/events": {
        "get": {
            "operationId": "workflowEvents",
            "summary": "Follow a workflow: every step's events tagged with its step, and the workflow's own",
            "parameters": [
                _WORKFLOW_ID,
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
            ],
            "responses": {
                "200": _reply("Events until its workflow_end event.", _STREAM),
                "204": _reply("The client already has its workflow_end event."),
                **_errors(401, 404, 406, 422, 503),
            },
        }
    },
}


def document(offers: Mapping[str, TaskOffer]) -> dict[str, Any]:
    """The whole document: the API's own schemas, and each task the live workers offer with its arguments'
    schema (``components.schemas["<task>.arguments"]``), so clients can be generated."""
    base = _base_document()
    schemas = dict(base["components"]["schemas"])
    submission = copy.deepcopy(schemas["TaskSubmission"])
    submission["properties"]["task"]["enum"] = sorted(offers)  # which tasks exist (clients and the fuzzer see them)
    schemas["TaskSubmission"] = submission
    tasks: dict[str, Any] = {}
    for name, offer in sorted(offers.items()):
        schemas |= _task_schemas(name, offer.schema)
        tasks[name] = {
            "description": offer.description,
            "arguments": {"$ref": f"#/components/schemas/{name}.arguments"},
            "positional": list(offer.positional),
            "timeout_seconds": offer.timeout_seconds,
            "max_retries": offer.max_retries,
        }
    return base | {"components": base["components"] | {"schemas": schemas}, "x-relay-tasks": tasks}


def _task_schemas(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A task's argument schema and its ``$defs`` as components, their references rewritten to match."""
    prefix = f"#/components/schemas/{name}."

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (prefix + v.removeprefix("#/$defs/") if k == "$ref" and isinstance(v, str) else rewrite(v))
                for k, v in node.items()
                if k != "$defs"
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    parts = {f"{name}.arguments": rewrite(schema)}
    for def_name, definition in schema.get("$defs", {}).items():
        parts[f"{name}.{def_name}"] = rewrite(definition)
    return parts


@lru_cache(maxsize=1)
def _base_document() -> dict[str, Any]:
    """The API's own part of the document (built once per process)."""
    models: list[type[BaseModel]] = [
        TaskSubmission,
        SubmitResult,
        TaskView,
        TaskPage,
        AbortResult,
        ErrorBody,
        Status,
        Ping,
        Stats,
        WorkflowSubmission,
        WorkflowSubmitResult,
        WorkflowView,
        WorkflowPage,
    ]
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Relay",
            "version": "0.1.0",
            "description": "Submit tasks, follow their events live, read their results.",
        },
        "paths": _PATHS,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{}, {"apiKey": []}, {"bearer": []}],
    }
