"""Failures of a submission that any entry point (HTTP, Service Bus) maps to its own answer."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Names listed in an unknown-task message; ``details.registered`` always lists them all.
MAX_NAMES_IN_MESSAGE = 20


class SubmissionError(Exception):
    """Base: ``details`` says where, when there is a where."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UnknownTask(SubmissionError, LookupError):
    """The name is not registered: nothing by that name may run."""

    def __init__(self, name: str, registered: Iterable[str] | None = None, reason: str | None = None) -> None:
        names = sorted(registered) if registered is not None else None
        message = f"no task is registered as {name!r}"
        close = difflib.get_close_matches(name, names or [], n=1)
        if close:  # a typo is the likeliest cause: say the near name first, before a list of twenty
            message += f" (did you mean {close[0]!r}?)"
        if reason is not None:
            message += f": {reason}"
        elif names is not None:
            shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE]) or "none"
            more = f" and {len(names) - MAX_NAMES_IN_MESSAGE} more" if len(names) > MAX_NAMES_IN_MESSAGE else ""
            message += f"; registered: {shown}{more}"
        details = None if names is None else {"registered": names} | ({"did_you_mean": close[0]} if close else {})
        super().__init__(message, details)
        self.name = name


class InvalidArguments(SubmissionError, ValueError):
    """The arguments do not fit the task's signature; ``errors`` lists where."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"the arguments do not fit the task: {first_problem(errors)}", errors)
        self.errors = errors


def first_problem(problems: Sequence[Mapping[str, Any]]) -> str:
    """The first of a list of ``{"loc", "msg"}`` problems as one line, and how many others there are:
    ``n: '3' is not of type 'integer' (and 2 more problems)``, so a message says what is wrong without ``details``."""
    if not problems:
        return "no details"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc") or [])
    line = f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
    others = len(problems) - 1
    if others:
        line += f" (and {others} more problem{'s' if others > 1 else ''})"
    return line


class InvalidOptions(SubmissionError, ValueError):
    """Valid arguments, but an option the task does not allow (e.g. a timeout above its maximum)."""


class IdConflict(SubmissionError):
    """Another task, with other arguments, already has this id."""

    @classmethod
    def between(
        cls, task_id: str, existing: tuple[str, Mapping[str, Any]] | None, submitted: tuple[str, Mapping[str, Any]]
    ) -> IdConflict:
        """Say what differs, the task name or which arguments (by name: values are not echoed back).

        ``existing`` and ``submitted`` are (task name, the job's keyword arguments); ``existing`` is None
        when the other task's record could not be read."""
        if existing is None:
            return cls(f"id {task_id!r} is already taken", {"differs": "unknown"})
        (old_name, old_kwargs), (new_name, new_kwargs) = existing, submitted
        if old_name != new_name:
            message = f"id {task_id!r} is already taken by a {old_name!r} task (this submit is {new_name!r})"
            return cls(message, {"differs": "task", "existing_task": old_name})
        fields = _differing(old_kwargs, new_kwargs)
        message = f"id {task_id!r} is already taken by a {old_name!r} task with other arguments ({', '.join(fields)})"
        return cls(message, {"differs": "arguments", "fields": fields})


class QueueFull(SubmissionError):
    """The queue is at its configured maximum depth: a transient refusal, retry later. ``queue`` is the named
    queue that is full, ``task_id`` the refused task's (its shard's count is the one that was full)."""

    def __init__(self, message: str, queue: str = "", task_id: str = "") -> None:
        super().__init__(message)
        self.queue = queue
        self.task_id = task_id


class ParentAborting(SubmissionError):
    """A child task (``ctx.submit``) whose parent's abort was requested: refused, so cancelling a parent, which then
    cancels its children, leaves none behind (``shared/lua/enqueue.lua``)."""


def _differing(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Names of the arguments (the job's ``params``) and options (``timeout_seconds``) whose values differ."""
    old_params, new_params = old.get("params") or {}, new.get("params") or {}
    names = sorted(k for k in set(old_params) | set(new_params) if old_params.get(k) != new_params.get(k))
    names += sorted(k for k in (set(old) | set(new)) - {"params"} if old.get(k) != new.get(k))
    return names or ["unknown"]
