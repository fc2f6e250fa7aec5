"""Handles on workflows: what ``client.workflow(canvas)`` (or a canvas's ``.delay()``) returns.

```python
handle = (add.s(2, 2) | mul.s(4)).delay()
for event in handle.events():        # every step's events (event.raw["step"]) and the workflow's own
    print(event.seq, event.type, event.raw.get("step"))
handle.result()                       # 16, or TaskFailed naming the failed step
```
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from relay.client.models import Event, WorkflowView

if TYPE_CHECKING:
    from relay.client.aio import AsyncClient
    from relay.client.sync import Client


class WorkflowHandle:
    """One workflow: its ``id``, its one stream of events, its tree and its value."""

    def __init__(self, client: Client, flow_id: str, submitted: dict[str, Any] | None = None) -> None:
        self.client = client
        self.id = flow_id
        self.submitted = submitted  # the submit's answer: state, steps, created

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.id!r})"

    def events(self, after: int = 0, *, until_final: bool = True, timeout: float | None = None) -> Iterator[Event]:
        """Events after ``after`` until its ``workflow_end``; resumes by itself across cut connections (and, with
        ``until_final``, goes on after a ``workflow_end`` that a retry followed)."""
        return self.client.workflow_events(self.id, after, until_final=until_final, timeout=timeout)

    def result(self, timeout: float | None = None) -> Any:
        """Its value once it ends (a chain's last step's, a group's list), or ``TaskFailed``/``TaskAborted``."""
        return self.client.workflow_result(self.id, timeout)

    def get(self, timeout: float | None = None) -> Any:
        """Celery's name for ``result``."""
        return self.result(timeout)

    def state(self) -> WorkflowView:
        return self.client.get_workflow(self.id)

    def cancel(self) -> str:
        return self.client.cancel_workflow(self.id)

    def retry(self) -> WorkflowHandle:
        self.client.retry_workflow(self.id)
        return self


class AsyncWorkflowHandle:
    """``WorkflowHandle`` for asyncio."""

    def __init__(self, client: AsyncClient, flow_id: str, submitted: dict[str, Any] | None = None) -> None:
        self.client = client
        self.id = flow_id
        self.submitted = submitted

    def __repr__(self) -> str:
        return f"AsyncWorkflowHandle({self.id!r})"

    def events(self, after: int = 0, *, until_final: bool = True, timeout: float | None = None) -> AsyncIterator[Event]:
        return self.client.workflow_events(self.id, after, until_final=until_final, timeout=timeout)

    async def result(self, timeout: float | None = None) -> Any:
        return await self.client.workflow_result(self.id, timeout)

    async def get(self, timeout: float | None = None) -> Any:
        return await self.result(timeout)

    async def state(self) -> WorkflowView:
        return await self.client.get_workflow(self.id)

    async def cancel(self) -> str:
        return await self.client.cancel_workflow(self.id)

    async def retry(self) -> AsyncWorkflowHandle:
        await self.client.retry_workflow(self.id)
        return self
