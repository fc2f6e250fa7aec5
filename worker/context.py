"""What a running task sees: its id and try, and a small API to publish events while it runs."""

from __future__ import annotations

from typing import Any

from shared.events import EventLog, EventType


class TaskContext:
    """Passed as the first argument of every task.

    ``await task.progress(3, 10, "step 3")`` and ``await task.partial({...})`` publish events that
    streaming clients receive live and late clients replay; the return value becomes the result event.
    """

    def __init__(self, task_id: str, try_number: int, events: EventLog) -> None:
        self.id = task_id
        self.try_number = try_number
        self._events = events

    async def progress(self, current: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far the task has got."""
        await self._events.publish(
            self.id, EventType.PROGRESS, {"current": current, "total": total, "message": message}
        )

    async def partial(self, data: Any) -> None:
        """Stream one partial result (any JSON value) before the final one."""
        await self._events.publish(self.id, EventType.PARTIAL, data)
