"""What a running task sees: its id and try, and a small API to publish events while it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Sequence
from typing import Any, Protocol

from shared.events import EventType


class EventSink(Protocol):
    """Where a task's events go (the worker's engine)."""

    def emit(self, type_: EventType, data: Any) -> Awaitable[None]:
        """Queue an event; the awaitable completes once it is stored and published."""

    @property
    def cancelled(self) -> bool:
        """True once the task was aborted, timed out or is being stopped."""

    def submit_child(
        self, task: str, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Awaitable[str]:
        """Enqueue a child task; the awaitable gives its id (``worker.engine.children``)."""

    def wait_children(self, ids: Sequence[str], timeout: float | None) -> Awaitable[list[Any]]:
        """The children's results once they all ended."""


class ChildFailed(RuntimeError):
    """A child task the parent waited for did not succeed: ``task_id``, its ``state`` (failed or aborted) and its
    ``error`` (``{"error_type", "message", ...}``)."""

    def __init__(self, task_id: str, state: str, error: Any) -> None:
        message = error.get("message") if isinstance(error, dict) else str(error)
        super().__init__(f"child task {task_id} {state}: {message}")
        self.task_id = task_id
        self.state = state
        self.error = error


class Done:
    """An awaitable that is already complete: what ``progress`` returns to a plain ``def`` task's thread,
    which has already waited for the event to be stored."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class TaskContext:
    """Passed as the first argument of every task.

    ``await task.progress(3, 10, "step 3")`` and ``await task.partial({...})`` publish events that streaming
    clients receive live and late clients replay; the return value becomes the result event. In a plain
    ``def`` task (run in a worker thread) call them without ``await``: they return once the event is stored.
    Event data must be JSON (a ``TypeError`` says so at once).
    """

    def __init__(self, task_id: str, try_number: int, sink: EventSink, name: str = "") -> None:
        self.id = task_id
        self.try_number = try_number
        self.name = name
        self._sink = sink

    def progress(self, current: float, total: float | None = None, message: str | None = None) -> Awaitable[None]:
        """Report how far the task has got."""
        return self._sink.emit(EventType.PROGRESS, {"current": current, "total": total, "message": message})

    def partial(self, data: Any) -> Awaitable[None]:
        """Stream one partial result (any JSON value) before the final one."""
        return self._sink.emit(EventType.PARTIAL, data)

    def submit(self, task: str, /, *args: Any, **kwargs: Any) -> Awaitable[str]:
        """Submit a child task, ``await ctx.submit("resize", url, width=64)``; gives its id. It runs like any task
        (on any worker), and its id derives from this task's, so a run of this task again after its worker was
        lost gets the same child back instead of a second one. ``async def`` tasks only."""
        return self._sink.submit_child(task, args, kwargs, {})

    def submit_with(
        self, task: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Awaitable[str]:
        """``submit`` with options: ``queue``, ``priority``, ``timeout_seconds``, ``max_retries``, ``id``."""
        return self._sink.submit_child(task, args, kwargs or {}, options)

    def wait(self, *task_ids: str, timeout: float | None = None) -> Awaitable[list[Any]]:
        """The results of child tasks once they all ended, in order (``ChildFailed`` if one did not succeed).
        While it waits, this task holds none of its worker's slots, so a worker whose slots all hold waiting
        parents still runs their children. ``async def`` tasks only."""
        return self._sink.wait_children(task_ids, timeout)

    @property
    def cancelled(self) -> bool:
        """True once the task was aborted, timed out or its worker is stopping: a plain ``def`` task cannot be
        interrupted, so a long one should check this between steps and return early."""
        return self._sink.cancelled

    def __repr__(self) -> str:
        return f"<TaskContext {self.name} id={self.id} try={self.try_number}>"
