"""The task schema: what a client submits and the states a task moves through."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_DEFER = dt.timedelta(days=30)
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN, description="Client-chosen id; makes submit idempotent.")]


class TaskState(StrEnum):
    """A task's state as ``GET /tasks/{id}`` reports it."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    UNKNOWN = "unknown"


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
