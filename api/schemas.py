"""Response shapes, for the OpenAPI document (``/docs/openapi.json``) that clients and the fuzzer read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.presence import SILENT_AFTER_SECONDS
from shared.tasks import TaskState


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable machine-readable code, e.g. invalid_arguments.")
    message: str = Field(
        description="What is wrong, for a person; a 422 names its first problem and how many others there are."
    )
    details: Any = Field(None, description="Per-field problems for 422s, extra facts otherwise.")


class ErrorBody(BaseModel):
    """Every error response, whatever its status."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class Links(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self")
    events: str


class SubmitResult(BaseModel):
    id: str
    task: str
    state: TaskState
    created: bool = Field(description="False when this id was already submitted with the same task and arguments.")
    links: Links


class TaskView(BaseModel):
    id: str
    task: str
    state: TaskState
    tries: int
    arguments: dict[str, Any] = Field(description="The validated arguments, by name.")
    timeout_seconds: float | None = Field(None, description="The timeout the task runs with.")
    result: Any = None
    error: dict[str, Any] | None = None
    enqueued_at: str | None = None
    scheduled_for: str | None = Field(None, description="When a waiting task is due.")
    started_at: str | None = Field(None, description="When its current (or last) try started; null if none did.")
    finished_at: str | None = None
    last_error: dict[str, Any] | None = Field(None, description="The failure a retrying task is waiting after.")
    next_try_at: str | None = Field(None, description="When a retrying task runs again.")
    waiting_reason: str | None = Field(
        None,
        description="Why a due task does not run yet beyond its turn: no live worker serves its task and queue, "
        "its concurrency limit is full, its rate limit holds it, or higher-priority work is due before it.",
    )
    queue: str = Field("default", description="The named queue it waits (or waited) in.")
    priority: int = Field(0, description="0 (lowest) to 9: among due tasks of a queue, higher runs first.")
    tenant: str | None = Field(None, description="The API key name that owns it; null for a task no tenant owns.")
    links: Links


class TaskPage(BaseModel):
    """One page of ``GET /tasks``, newest first."""

    tasks: list[TaskView]
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next page; null at the end.")


class AbortResult(BaseModel):
    id: str
    state: str = Field(description="aborted (was queued) or aborting (was running).")
    children: int | None = Field(
        None,
        description="Child tasks (submitted with ctx.submit, and theirs, recursively) this cancel aborted or is "
        "cancelling, for an abort or a workflow's cancel.",
    )
    links: Links


class Status(BaseModel):
    status: str


class Ping(BaseModel):
    service: str
    ping: str


class QueueCounts(BaseModel):
    name: str = Field(description="The queue this API submits to (RELAY_QUEUE_NAME).")
    due: int = Field(description="Tasks due now and waiting for a worker.")
    deferred: int = Field(description="Tasks waiting for a later time (delay, run_at, retry backoff).")
    running: int


class NamedQueueCounts(BaseModel):
    name: str = Field(description="A named queue (RELAY_QUEUES, a task's queue).")
    due: int
    deferred: int
    running: int


class RunningTask(BaseModel):
    id: str
    task: str
    started_at: str | None


class WorkerView(BaseModel):
    id: str = Field(description="hostname:pid:random, unique per worker process.")
    hostname: str
    pid: int
    status: str = Field(
        description=f"alive, stopping (finishing its jobs) or silent (not heard of for {SILENT_AFTER_SECONDS:g} s)."
    )
    seen_seconds_ago: float
    started_at: str | None
    concurrency: int
    running: int
    running_tasks: list[RunningTask] = Field(description="Up to 20 of the tasks it runs now.")
    totals: dict[str, int] = Field(description="Outcomes it recorded since it started, by outcome.")
    metrics_port: int | None = Field(description="Where it serves Prometheus metrics; null: none.")
    queues: list[str] = Field(["default"], description="The named queues it serves, in the order it serves them.")


class TaskCounts(BaseModel):
    task: str
    due: int = Field(description="Tasks of this name due now.")
    deferred: int = Field(description="Tasks of this name waiting for a later time.")
    waiting_reason: str | None = Field(description="Set when no live worker runs this task (its jobs wait for one).")


class Stats(BaseModel):
    """``GET /stats``: what the dashboard shows at a glance."""

    queue: QueueCounts
    queues: list[NamedQueueCounts] = Field(description="Each named queue with jobs or live workers serving it.")
    tasks: list[TaskCounts] = Field(description="Waiting tasks by name (names with none waiting are left out).")
    workers: list[WorkerView] = Field(description="Workers of this queue heard of in the last minute.")
    time: str


class WorkflowSubmitResult(BaseModel):
    id: str
    state: str = Field(description="running, or the state of the workflow this id already names.")
    steps: int
    created: bool = Field(description="False when this id was already submitted with the same canvas.")
    links: Links


class WorkflowNode(BaseModel):
    """A node of a workflow's tree: a step (``kind`` task, with its step number, task id and state) or a
    ``chain``, ``group``, ``chord`` (with its ``callback``) or ``map`` of nodes. A map over the value before it
    (submitted without ``items``) has a step number and state of its own (it runs no task) and, once that value
    is known, its members as its children (steps numbered after the workflow's others)."""

    kind: str
    step: int | None = None
    task: str | None = None
    task_id: str | None = None
    state: str | None = Field(
        None,
        description="pending, queued, running, succeeded, failed, aborted or skipped (a step, or a map over the "
        "value before it: running while its members run).",
    )
    children: list[WorkflowNode] | None = None
    callback: WorkflowNode | None = None
    links: Links | None = None


class WorkflowView(BaseModel):
    id: str
    state: str = Field(description="running, succeeded, failed or aborted.")
    steps: int
    counts: dict[str, int] = Field(description="Steps by state.")
    result: Any = Field(None, description="Its value once it succeeded (a chain's last step's, a group's list).")
    error: dict[str, Any] | None = Field(None, description="Why it failed: the first failed step and its error.")
    created_at: str | None = None
    finished_at: str | None = None
    tree: WorkflowNode
    tenant: str | None = None
    links: Links


class WorkflowSummary(BaseModel):
    id: str
    state: str
    steps: int
    tenant: str | None = None
    links: Links


class WorkflowPage(BaseModel):
    """``GET /workflows``, newest first. A request examines a bounded part of the index (as ``GET /tasks``
    does), so a page may be short, even empty, and still have a ``next_cursor``."""

    workflows: list[WorkflowSummary]
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next page; null at the end.")
