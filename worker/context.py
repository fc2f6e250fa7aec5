"""What a running task sees: its id and try, and a small API to publish events while it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import Any, Protocol

from shared.events import EventType


class EventSink(Protocol):
    """Where a task's events go (the worker's engine)."""

    def emit(self, type_: EventType, data: Any) -> Awaitable[None]:
        """Queue an event; the awaitable completes once it is stored and published."""

    @property
    def cancelled(self) -> bool:
        """True once the task was aborted, timed out or is being stopped."""


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

    @property
    def cancelled(self) -> bool:
        """True once the task was aborted, timed out or its worker is stopping: a plain ``def`` task cannot be
        interrupted, so a long one should check this between steps and return early."""
        return self._sink.cancelled

    def __repr__(self) -> str:
        return f"<TaskContext {self.name} id={self.id} try={self.try_number}>"
