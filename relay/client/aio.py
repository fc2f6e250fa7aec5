"""The asyncio client: ``AsyncClient`` and ``AsyncTaskHandle``, the same calls as the blocking ones, awaited.

Requests, responses, stream decisions and retry waits come from the same sans-I/O modules as ``sync``;
only the sending and sleeping differ.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from relay.client import protocol
from relay.client.canvas import Canvas, as_canvas
from relay.client.celery import AsyncTaskProxy
from relay.client.config import ClientConfig, RetryPolicy
from relay.client.errors import (
    NotFoundError,
    TaskNotFound,
    answer_json,
    connection_error,
    error_from_response,
    may_resend,
    never_sent,
)
from relay.client.flows import AsyncWorkflowHandle
from relay.client.models import Event, Submitted, TaskView, WorkflowView
from relay.client.protocol import Call
from relay.client.retry import Deadline, RetryBudget, bounded
from relay.client.stream import (
    ConnectionEnd,
    Dropped,
    Ended,
    Follower,
    Reconnect,
    Refused,
    RunWatch,
    StreamBroken,
    describe,
    events_call,
    stream_request,
)


class AsyncClient:
    """``Client`` for asyncio: ``async with AsyncClient() as relay: handle = await relay.submit("echo")``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        stream_read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(base_url, api_key, timeout, stream_read_timeout, retry)
        self._http = httpx.AsyncClient(
            base_url=self.config.base_url, headers=self.config.headers(), timeout=timeout, transport=transport
        )
        self._answered = False  # has the API answered this client yet (see RetryPolicy.first_contact_wait_seconds)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        task: str,
        /,
        *args: Any,
        id: str | None = None,
        delay: float | dt.timedelta | None = None,
        run_at: dt.datetime | str | None = None,
        timeout: float | dt.timedelta | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
        priority: int | None = None,
        **kwargs: Any,
    ) -> AsyncTaskHandle:
        """See ``Client.submit``."""
        return await self.submit_with(
            task,
            args,
            kwargs,
            id=id,
            delay=delay,
            run_at=run_at,
            timeout=timeout,
            max_retries=max_retries,
            queue=queue,
            priority=priority,
        )

    async def submit_with(
        self, task: str, args: tuple[Any, ...] | builtins.list[Any], kwargs: dict[str, Any], **options: Any
    ) -> AsyncTaskHandle:
        body = await self._json(protocol.submit_call(task, args, kwargs, **options))
        submitted = Submitted.from_json(body)
        return AsyncTaskHandle(self, submitted.id, submitted)

    async def run(
        self,
        task: str,
        /,
        *args: Any,
        wait: float | None = None,
        id: str | None = None,
        delay: float | dt.timedelta | None = None,
        run_at: dt.datetime | str | None = None,
        timeout: float | dt.timedelta | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
        priority: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Submit ``task(*args, **kwargs)`` and await its result (``TaskFailed``/``TaskAborted`` as
        ``result`` raises them; ``ResultTimeout`` after ``wait`` seconds, the task running on). The options are
        ``submit``'s. One request: the task's events come back on the submit's own response, so this is the
        quickest way to run a task and wait (``(await submit(...)).result()`` makes three requests); a stream
        cut short resumes by itself, and a task that did not succeed has its final state read."""
        options = {"id": id, "delay": delay, "run_at": run_at, "timeout": timeout, "max_retries": max_retries}
        return await self.run_with(task, args, kwargs, wait=wait, queue=queue, priority=priority, **options)

    async def run_with(
        self,
        task: str,
        args: tuple[Any, ...] | builtins.list[Any],
        kwargs: dict[str, Any],
        *,
        wait: float | None = None,
        **options: Any,
    ) -> Any:
        """``run`` with the task's arguments passed explicitly, so none can clash with an option's name."""
        watch = RunWatch.start(task, args, kwargs, wait, **options)
        async with aclosing(self._stream(watch.task_id, 0, False, watch.deadline, submit=watch.submit)) as events:
            async for event in events:
                watch.feed(event)
        return watch.value if watch.succeeded else await self.result(watch.task_id, watch.remaining())

    def task(self, name: str) -> AsyncTaskProxy:
        """Celery-style: ``await client.task("resize").delay(url=...)``."""
        return AsyncTaskProxy(self, name)

    def task_handle(self, task_id: str) -> AsyncTaskHandle:
        return AsyncTaskHandle(self, task_id)

    async def get(self, task_id: str) -> TaskView:
        return TaskView.from_json(await self._json(protocol.state_call(task_id)))

    async def cancel(self, task_id: str) -> str:
        return str((await self._json(protocol.cancel_call(task_id)))["state"])

    async def retry(self, task_id: str) -> AsyncTaskHandle:
        submitted = Submitted.from_json(await self._json(protocol.retry_call(task_id)))
        return AsyncTaskHandle(self, task_id, submitted)

    async def list(
        self,
        state: str | None = None,
        task: str | None = None,
        limit: int | None = None,
        page_size: int = protocol.DEFAULT_PAGE_SIZE,
        tenant: str | None = None,
    ) -> AsyncIterator[TaskView]:
        """``async for view in client.list(state="failed")``: newest first, a page at a time (``tenant``: as
        in ``Client.list``)."""
        cursor: str | None = None
        yielded = 0
        while limit is None or yielded < limit:
            size = protocol.page_sizes(None if limit is None else limit - yielded, page_size)
            views, cursor = protocol.parse_page(await self._json(protocol.list_call(state, task, size, cursor, tenant)))
            for view in views[:size]:
                yield view
                yielded += 1
            if cursor is None:  # a page may be empty with a cursor (its scan found no match): older tasks follow
                return

    def events(
        self, task_id: str, after: int = 0, *, until_final: bool = True, timeout: float | None = None
    ) -> AsyncIterator[Event]:
        """See ``Client.events``."""
        deadline = Deadline(task_id, timeout) if timeout is not None else None
        return self._stream(task_id, after, until_final, deadline)

    async def result(self, task_id: str, timeout: float | None = None) -> Any:
        deadline = Deadline(task_id, timeout) if timeout is not None else None
        view = await self._get(task_id, deadline)
        if not view.is_final:
            async with aclosing(self._stream(task_id, 0, True, deadline)) as events:
                async for _ in events:
                    pass
            view = await self._get(task_id, deadline)
        return protocol.outcome(view)

    async def stats(self) -> dict[str, Any]:
        """The queue (``due``, ``deferred``, ``running``) and the workers heard of lately (``GET /stats``)."""
        return await self._json(protocol.stats_call())

    async def arguments_schema(self, task: str) -> dict[str, Any] | None:
        """The JSON Schema the live workers publish for ``task``'s arguments; None if none offers it."""
        return protocol.arguments_schema(await self._json(protocol.openapi_call()), task)

    # -- workflows (docs/workflows.md) -------------------------------------------------------------

    async def workflow(self, canvas: Canvas | dict[str, Any], id: str | None = None) -> AsyncWorkflowHandle:
        """Submit a workflow (a ``relay.client.canvas`` canvas, or its JSON); ``id`` makes it idempotent."""
        body = await self._json(protocol.workflow_call(as_canvas(canvas), id))
        return AsyncWorkflowHandle(self, str(body["id"]), body)

    def workflow_handle(self, flow_id: str) -> AsyncWorkflowHandle:
        """A handle on a workflow submitted earlier (no request is made)."""
        return AsyncWorkflowHandle(self, flow_id)

    async def get_workflow(self, flow_id: str) -> WorkflowView:
        """The workflow's state and tree (``NotFoundError`` if there is no such workflow)."""
        return WorkflowView.from_json(await self._json(protocol.workflow_state_call(flow_id)))

    async def cancel_workflow(self, flow_id: str) -> str:
        """Cancel: ``"aborted"``, or ``"aborting"`` while its running steps stop (``NotAbortable`` if ended)."""
        return str((await self._json(protocol.workflow_cancel_call(flow_id)))["state"])

    async def retry_workflow(self, flow_id: str) -> None:
        """Run a failed or cancelled workflow again from its failed steps (``NotRetryable`` otherwise)."""
        await self._json(protocol.workflow_retry_call(flow_id))

    def workflow_events(
        self, flow_id: str, after: int = 0, *, until_final: bool = True, timeout: float | None = None
    ) -> AsyncIterator[Event]:
        """Every step's events (each tagged with its ``step``) and the workflow's own, replayed then live, each
        exactly once, until its ``workflow_end`` (resumes by itself across cut connections)."""
        deadline = Deadline(flow_id, timeout, "workflow") if timeout is not None else None
        return self._stream(flow_id, after, until_final, deadline, workflow=True)

    async def workflow_result(self, flow_id: str, timeout: float | None = None) -> Any:
        """Wait for the workflow to end: its value, or ``TaskFailed``/``TaskAborted`` naming the failed step."""
        deadline = Deadline(flow_id, timeout, "workflow") if timeout is not None else None
        view = WorkflowView.from_json(await self._json(protocol.workflow_state_call(flow_id), deadline))
        if not view.is_final:
            async with aclosing(self._stream(flow_id, 0, True, deadline, workflow=True)) as events:
                async for _ in events:
                    pass
            view = WorkflowView.from_json(await self._json(protocol.workflow_state_call(flow_id), deadline))
        return protocol.workflow_outcome(view)

    # -- the wire ---------------------------------------------------------------------------------

    async def _get(self, task_id: str, deadline: Deadline | None) -> TaskView:
        return TaskView.from_json(await self._json(protocol.state_call(task_id), deadline))

    async def _json(self, call: Call, deadline: Deadline | None = None) -> dict[str, Any]:
        return answer_json(await self._send(call, deadline))

    async def _send(self, call: Call, deadline: Deadline | None = None) -> httpx.Response:
        budget = RetryBudget(self.config.retry, first_contact=not self._answered)
        while True:
            try:
                timeout = bounded(self.config.timeout, deadline)
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params, timeout=timeout
                )
            except httpx.TransportError as exc:
                error = connection_error(self.config.base_url, exc)
                if not (call.idempotent or never_sent(exc)):
                    raise error from exc
                delay = budget.wait_or_raise(error)
            else:
                self._answered = True
                budget.answered()
                if not response.is_error:
                    return response
                refusal = error_from_response(response)
                if not may_resend(refusal, call.idempotent):
                    raise refusal
                delay = budget.wait_or_raise(refusal)
            await asyncio.sleep(bounded(delay, deadline))
            if deadline is not None:
                deadline.check()

    async def _view_or_none(self, task_id: str, deadline: Deadline | None) -> TaskView | None:
        try:
            return await self._get(task_id, deadline)
        except TaskNotFound:
            return None

    async def _flow_or_none(self, flow_id: str, deadline: Deadline | None) -> WorkflowView | None:
        try:
            return WorkflowView.from_json(await self._json(protocol.workflow_state_call(flow_id), deadline))
        except NotFoundError:
            return None

    async def _stream(
        self,
        task_id: str,
        after: int,
        until_final: bool,
        deadline: Deadline | None,
        workflow: bool = False,
        submit: Call | None = None,
    ) -> AsyncGenerator[Event, None]:
        """See ``Client._stream``: with ``submit``, that request opens the stream, and is sent again until an
        event has come back; after, a cut stream resumes with ``GET .../events?after=``."""
        first_contact = not self._answered
        follower = Follower(task_id, after, until_final, self.config.retry, first_contact, workflow=workflow)
        while True:
            if deadline is not None:
                deadline.check()
            end: ConnectionEnd = Dropped("no answer")
            call = submit if submit is not None and follower.last_seq == after else events_call(follower)
            async with aclosing(self._connection(follower, deadline, call)) as items:
                async for item in items:
                    if isinstance(item, Event):
                        yield item
                    else:
                        end = item
            step = follower.after(end)
            if step.check_state:
                view = await (self._flow_or_none if workflow else self._view_or_none)(task_id, deadline)
                step = follower.after_state(view)
            if step.stop:
                return
            await asyncio.sleep(bounded(step.wait, deadline))

    async def _connection(
        self, follower: Follower, deadline: Deadline | None, call: Call
    ) -> AsyncGenerator[Event | ConnectionEnd, None]:
        """One connection's events (``call`` opens it), then how it ended."""
        request = self._http.build_request(**stream_request(call, self.config, deadline))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            yield Dropped(describe(exc))
            return
        self._answered = True
        follower.answered()  # the follower's budget, made before this answer, must hear of it too
        try:
            if response.status_code == 204:
                yield Ended()
                return
            if response.is_error:
                await response.aread()
                yield Refused(error_from_response(response))
                return
            last_type = ""  # the server closes a stream right after the end that is last in the log
            async for line in response.aiter_lines():
                item = follower.feed(line)
                if isinstance(item, Reconnect):
                    yield item
                    return
                if item is not None:
                    yield item
                    last_type = item.type
                    if item.type == follower.final and not follower.until_final:
                        yield Ended()
                        return
                if deadline is not None:
                    deadline.check()  # heartbeats keep a read alive: the deadline is checked on every line
            yield Ended() if last_type == follower.final else Dropped("the stream closed before the task's end")
        except (httpx.TransportError, StreamBroken) as exc:
            if deadline is not None:
                deadline.check()
            yield Dropped(describe(exc))
        finally:
            await response.aclose()


class AsyncTaskHandle:
    """``TaskHandle`` for asyncio: ``async for event in handle.events()``, ``await handle.result()``."""

    def __init__(self, client: AsyncClient, task_id: str, submitted: Submitted | None = None) -> None:
        self.client = client
        self.id = task_id
        self.submitted = submitted

    def __repr__(self) -> str:
        return f"AsyncTaskHandle({self.id!r})"

    def events(self, after: int = 0, *, until_final: bool = True, timeout: float | None = None) -> AsyncIterator[Event]:
        return self.client.events(self.id, after, until_final=until_final, timeout=timeout)

    async def result(self, timeout: float | None = None) -> Any:
        return await self.client.result(self.id, timeout)

    async def get(self, timeout: float | None = None) -> Any:
        """Celery's name for ``result``."""
        return await self.result(timeout)

    async def state(self) -> TaskView:
        return await self.client.get(self.id)

    async def cancel(self) -> str:
        return await self.client.cancel(self.id)

    async def retry(self) -> AsyncTaskHandle:
        self.submitted = (await self.client.retry(self.id)).submitted
        return self
