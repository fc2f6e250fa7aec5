"""What the API sends back, as typed objects: a task's events, its state, and a submit's answer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

FINAL_STATES = frozenset({"succeeded", "failed", "aborted"})
STATES = frozenset({"queued", "deferred", "retrying", "running", *FINAL_STATES})


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a task: ``seq`` counts from 1 per task and never repeats; ``raw`` is the JSON as sent."""

    seq: int
    type: str
    task_id: str
    ts: float
    data: Any
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Event:
        seq = raw.get("seq")
        if seq is None and raw.get("type") == "gap":
            seq = raw.get("data", {}).get("last_seq", 0)  # a gap stands for the range it reports
        task_id, ts = str(raw.get("task_id", "")), float(raw.get("ts", 0))
        return cls(int(seq or 0), str(raw["type"]), task_id, ts, raw.get("data"), raw)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What a task raised: its exception's class name and message."""

    error_type: str
    message: str

    @classmethod
    def parse(cls, value: Any) -> ErrorInfo | None:
        if not isinstance(value, dict):
            return None
        return cls(str(value.get("error_type", "Error")), str(value.get("message", "")))


def _time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class TaskView:
    """A task as ``GET /tasks/{id}`` shows it; ``raw`` keeps every field, including ones added later."""

    id: str
    task: str
    state: str
    tries: int
    arguments: dict[str, Any]
    timeout_seconds: float | None
    result: Any
    error: ErrorInfo | None
    last_error: ErrorInfo | None
    enqueued_at: dt.datetime | None
    scheduled_for: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    next_try_at: dt.datetime | None
    waiting_reason: str | None = None  # e.g. "waiting for a worker that runs 'resize'"
    queue: str | None = None  # None from an API that has no named queues
    priority: int | None = None  # 0..9, higher claimed first; None from an API without priorities
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def is_final(self) -> bool:
        """True once the task succeeded, failed or was aborted (a manual retry can start it again)."""
        return self.state in FINAL_STATES

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaskView:
        return cls(
            id=str(raw["id"]),
            task=str(raw.get("task", "")),
            state=str(raw["state"]),
            tries=int(raw.get("tries") or 0),
            arguments=dict(raw.get("arguments") or {}),
            timeout_seconds=raw.get("timeout_seconds"),
            result=raw.get("result"),
            error=ErrorInfo.parse(raw.get("error")),
            last_error=ErrorInfo.parse(raw.get("last_error")),
            enqueued_at=_time(raw.get("enqueued_at")),
            scheduled_for=_time(raw.get("scheduled_for")),
            started_at=_time(raw.get("started_at")),
            finished_at=_time(raw.get("finished_at")),
            next_try_at=_time(raw.get("next_try_at")),
            waiting_reason=raw.get("waiting_reason"),
            queue=None if raw.get("queue") is None else str(raw["queue"]),
            priority=None if raw.get("priority") is None else int(raw["priority"]),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer to a submit (or a retry): ``created`` is false when this id already named the same task."""

    id: str
    task: str
    state: str
    created: bool

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Submitted:
        return cls(str(raw["id"]), str(raw.get("task", "")), str(raw.get("state", "")), bool(raw.get("created")))


@dataclass(frozen=True, slots=True)
class WorkflowView:
    """A workflow as ``GET /workflows/{id}`` shows it: its state, steps by state, its value or error once ended,
    and its tree (each step with its ``task_id`` and ``state``)."""

    id: str
    state: str
    steps: int
    counts: dict[str, int]
    result: Any
    error: dict[str, Any] | None
    tree: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def is_final(self) -> bool:
        """True once it succeeded, failed or was cancelled (a retry can start it again)."""
        return self.state in FINAL_STATES

    def step_ids(self) -> list[str]:
        """Its steps' task ids, in step order."""
        found: dict[int, str] = {}

        def walk(node: dict[str, Any]) -> None:
            if node.get("kind") == "task":
                found[int(node["step"])] = str(node["task_id"])
            for child in [*(node.get("children") or []), *([node["callback"]] if node.get("callback") else [])]:
                walk(child)

        walk(self.tree)
        return [found[i] for i in sorted(found)]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> WorkflowView:
        return cls(
            id=str(raw["id"]),
            state=str(raw["state"]),
            steps=int(raw.get("steps") or 0),
            counts=dict(raw.get("counts") or {}),
            result=raw.get("result"),
            error=raw.get("error"),
            tree=dict(raw.get("tree") or {}),
            raw=raw,
        )
