"""The HTTP calls of the contract as data (method, path, body), and their answers as objects (sans I/O).

Both clients send exactly these; keeping them here means the sync and async clients cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from relay.client.errors import TaskAborted, TaskFailed, TaskLost
from relay.client.models import TaskView, WorkflowView

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
PRIORITIES = range(10)  # 0 lowest (the default), 9 claimed first


@dataclass(frozen=True, slots=True)
class Call:
    """One request. ``idempotent``: safe to resend when the connection broke after it may have been sent.
    ``headers``: besides those every request carries (the key, the user agent)."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    idempotent: bool = True
    headers: dict[str, str] = field(default_factory=dict)


def task_path(task_id: str, suffix: str = "") -> str:
    return f"/tasks/{quote(task_id, safe='')}{suffix}"


def workflow_path(flow_id: str, suffix: str = "") -> str:
    return f"/workflows/{quote(flow_id, safe='')}{suffix}"


def _seconds(value: float | dt.timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{name} must not be negative (got {seconds:g})")
    return seconds


def _instant(value: dt.datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("run_at needs a timezone (e.g. datetime.now(UTC) + timedelta(minutes=5))")
    return value.isoformat()


def _priority(value: int | None) -> int | None:
    # A bool is an int to Python but not to the API; a float would be refused there with a vaguer message.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value not in PRIORITIES):
        raise ValueError(f"priority must be an integer 0..9 (0 lowest and the default, 9 claimed first), got {value!r}")
    return value


def _queue(value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"queue must be a queue's name, got {value!r}")
    return value  # which queues a task may go to is the API's to say (a 422 otherwise)


def submit_call(
    task: str,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    *,
    id: str | None = None,
    delay: float | dt.timedelta | None = None,
    run_at: dt.datetime | str | None = None,
    timeout: float | dt.timedelta | None = None,
    max_retries: int | None = None,
    queue: str | None = None,
    priority: int | None = None,
) -> Call:
    """``POST /tasks``. Without an ``id`` the client makes one, so resending after a lost answer is harmless:
    the API answers the second one with ``created: false`` instead of running the task twice. ``queue`` and
    ``priority`` are sent only when given, so the task's own defaults apply otherwise."""
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    body: dict[str, Any] = {"task": task, "args": list(args), "kwargs": dict(kwargs), "id": id or uuid.uuid4().hex}
    options = {
        "delay_seconds": _seconds(delay, "delay"),
        "run_at": _instant(run_at),
        "timeout_seconds": _seconds(timeout, "timeout"),
        "max_retries": max_retries,
        "queue": _queue(queue),
        "priority": _priority(priority),
    }
    body.update({k: v for k, v in options.items() if v is not None})
    return Call("POST", "/tasks", json=body)


def list_call(
    state: str | None, task: str | None, page_size: int, cursor: str | None, tenant: str | None = None
) -> Call:
    """``GET /tasks``: one page, newest first (``tenant``: an admin key's filter)."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
    params = {"state": state, "task": task, "limit": page_size, "cursor": cursor, "tenant": tenant}
    return Call("GET", "/tasks", params={k: v for k, v in params.items() if v is not None})


def page_sizes(limit: int | None, page_size: int) -> int:
    """Never ask for more than the caller will take."""
    return min(page_size, limit) if limit is not None else page_size


def state_call(task_id: str) -> Call:
    return Call("GET", task_path(task_id))


def cancel_call(task_id: str) -> Call:
    # A resent DELETE whose first answer was lost would say "not_abortable": resend only what was never sent.
    return Call("DELETE", task_path(task_id), idempotent=False)


def retry_call(task_id: str) -> Call:
    return Call("POST", task_path(task_id, "/retry"), idempotent=False)


def stats_call() -> Call:
    """``GET /stats``: the queue's gauges (due, deferred, running) and the live workers."""
    return Call("GET", "/stats")


def openapi_call() -> Call:
    """``GET /openapi.json``: the API's document, with each offered task's argument schema."""
    return Call("GET", "/openapi.json")


def arguments_schema(document: dict[str, Any], task: str) -> dict[str, Any] | None:
    """The JSON Schema of ``task``'s arguments from the API's OpenAPI document (its ``$ref``s resolved
    against the document's components), or None when no live worker offers the task."""
    offered = (document.get("x-relay-tasks") or {}).get(task)
    if not isinstance(offered, dict):
        return None
    components = (document.get("components") or {}).get("schemas") or {}

    def resolve(node: Any, depth: int = 0) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and depth < 20:  # a recursive model stops resolving, it does not loop
                return resolve(components.get(ref.rpartition("/")[2], {}), depth + 1)
            return {k: resolve(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(item, depth) for item in node]
        return node

    schema = resolve(offered.get("arguments") or {})
    return schema if isinstance(schema, dict) else None


def parse_page(body: dict[str, Any]) -> tuple[list[TaskView], str | None]:
    return [TaskView.from_json(t) for t in body["tasks"]], body.get("next_cursor")


def outcome(view: TaskView) -> Any:
    """A final task's result, or the exception that says why there is none."""
    if view.state == "succeeded":
        return view.result
    error = view.error
    if view.state == "aborted":
        raise TaskAborted(view.id, error.message if error else "aborted")
    if view.state == "failed":
        raise TaskFailed(view.id, error.error_type if error else "Error", error.message if error else "")
    raise TaskLost(view.id, f"state {view.state!r} is not final")


def workflow_call(canvas: dict[str, Any], id: str | None = None) -> Call:
    """``POST /workflows``, with an id the client makes if none is given (resending is then harmless)."""
    return Call("POST", "/workflows", json={"workflow": canvas, "id": id or uuid.uuid4().hex})


def workflow_state_call(flow_id: str) -> Call:
    return Call("GET", workflow_path(flow_id))


def workflow_cancel_call(flow_id: str) -> Call:
    return Call("DELETE", workflow_path(flow_id), idempotent=False)


def workflow_retry_call(flow_id: str) -> Call:
    return Call("POST", workflow_path(flow_id, "/retry"), idempotent=False)


def workflow_outcome(view: WorkflowView) -> Any:
    """A final workflow's value, or the exception that says why there is none (naming its failed step)."""
    if view.state == "succeeded":
        return view.result
    error = view.error or {}
    message = str(error.get("message", ""))
    if error.get("task_id"):
        message = f"step {error.get('step')} ({error['task_id']}): {message}"
    if view.state == "aborted":
        raise TaskAborted(view.id, message or "cancelled")
    if view.state == "failed":
        raise TaskFailed(view.id, str(error.get("error_type", "Error")), message)
    raise TaskLost(view.id, f"state {view.state!r} is not final")
