"""The task schema: what a client submits and the states a task moves through."""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.lanes import QUEUE_NAME_REGEX

MAX_DEFER = dt.timedelta(days=30)
# Ids and names are matched whole (``fullmatch``): ``$`` alone would also accept a trailing newline.
TASK_ID_REGEX: Final = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
TASK_ID_PATTERN: Final = f"^{TASK_ID_REGEX}$"
# Task names also appear verbatim inside Relay's JSON records, which its Lua scripts read: no quotes, no escapes.
TASK_NAME_REGEX: Final = r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}"
TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN, description="Client-chosen id; makes submit idempotent.")]
_task_id = re.compile(TASK_ID_REGEX)
_task_name = re.compile(TASK_NAME_REGEX)


def is_task_id(value: str) -> bool:
    """True if ``value`` is a whole valid task id."""
    return _task_id.fullmatch(value) is not None


def is_task_name(value: str) -> bool:
    """True if ``value`` can name a task."""
    return _task_name.fullmatch(value) is not None


class TaskState(StrEnum):
    """A task's state as ``GET /tasks/{id}`` reports it."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    RETRYING = "retrying"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """Succeeded, failed or aborted: the task will not run again unless asked to."""
        return self in FINAL_STATES


FINAL_STATES: Final = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.ABORTED})


class TaskSubmission(BaseModel):
    """Body of ``POST /tasks`` (and of a Service Bus message)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    task: Annotated[str, Field(min_length=1, max_length=200)]
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    id: TaskId | None = None
    delay_seconds: Annotated[float, Field(ge=0, le=MAX_DEFER.total_seconds())] | None = None
    run_at: dt.datetime | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    max_retries: (
        Annotated[int, Field(ge=0, description="Fewer retries than the task's policy allows (never more).")] | None
    ) = None
    queue: (
        Annotated[
            str, Field(pattern=f"^{QUEUE_NAME_REGEX}$", description="A named queue the task allows (default: its own).")
        ]
        | None
    ) = None
    priority: (
        Annotated[int, Field(ge=0, le=9, description="0 (lowest) to 9; higher runs first (default: the task's).")]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_schedule(self) -> TaskSubmission:
        if self.delay_seconds is not None and self.run_at is not None:
            raise ValueError("give delay_seconds or run_at, not both")
        if self.run_at is not None:
            if self.run_at.tzinfo is None:
                raise ValueError("run_at needs a timezone (e.g. 2026-01-01T12:00:00Z)")
            if self.run_at - dt.datetime.now(dt.UTC) > MAX_DEFER:
                raise ValueError(f"run_at may be at most {MAX_DEFER.days} days ahead")
        return self

    def defer_until(self) -> dt.datetime | None:
        """When to run, if later than now (a ``run_at`` in the past means now)."""
        if self.run_at is None or self.run_at <= dt.datetime.now(dt.UTC):
            return None
        return self.run_at
