"""Failures of a submission that any entry point (HTTP, Service Bus) maps to its own answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SubmissionError(Exception):
    """Base: ``details`` says where, when there is a where."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UnknownTask(SubmissionError, LookupError):
    """The name is not registered: nothing by that name may run."""

    def __init__(self, name: str, registered: Sequence[str] = ()) -> None:
        known = f"; registered tasks: {', '.join(registered)}" if registered else ""
        super().__init__(f"no task is registered as {name!r}{known}", {"registered": list(registered)})
        self.name = name


class InvalidArguments(SubmissionError, ValueError):
    """The arguments do not fit the task's signature; ``errors`` lists where."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("the arguments do not fit the task", errors)
        self.errors = errors


class InvalidOptions(SubmissionError, ValueError):
    """Valid arguments, but an option the task does not allow (e.g. a timeout above its maximum)."""


class IdConflict(SubmissionError):
    """Another task, with other arguments, already has this id."""


class QueueFull(SubmissionError):
    """The queue is at its configured maximum depth: a transient refusal, retry later."""
