"""The blocking client: ``Client`` submits and looks up tasks; a ``TaskHandle`` follows one task."""

from __future__ import annotations

import builtins
import datetime as dt
import time
from collections.abc import Generator, Iterator
from contextlib import closing
from typing import Any

import httpx

from relay.client import protocol
from relay.client.canvas import Canvas, as_canvas
from relay.client.celery import TaskProxy
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
from relay.client.flows import WorkflowHandle
from relay.client.models import Event, Submitted, TaskView, WorkflowView
from relay.client.protocol import Call
from relay.client.retry import Deadline, RetryBudget, bounded
from relay.client.senders import Reply, Sender, Timeouts, for_client
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
    stream_timeouts,
)


class Client:
    """A connection pool to one Relay API. Use it as a context manager, or ``close()`` it.

    ``base_url`` and ``api_key`` default to ``RELAY_URL`` and ``RELAY_API_KEY``. ``timeout`` bounds each
    ordinary request; ``stream_read_timeout`` is how long a stream may stay silent (the API sends
    heartbeats) before it is considered cut and resumed. ``retry`` says how refusals the server calls
    temporary and lost connections are retried. Requests go over urllib3 (relay/client/senders.py says why);
    with ``transport`` (an ``httpx.BaseTransport``, e.g. ``httpx.MockTransport``), or a proxy named in the
    environment, over httpx.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        stream_read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(base_url, api_key, timeout, stream_read_timeout, retry)
        self._sender: Sender = for_client(self.config, transport)
        self._answered = False  # has the API answered this client yet (see RetryPolicy.first_contact_wait_seconds)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sender.close()

    def submit(
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
    ) -> TaskHandle:
        """Submit ``task(*args, **kwargs)``. ``delay`` (seconds) or ``run_at`` (an aware datetime) defer it;
        ``timeout`` caps its run; ``max_retries`` may lower its retry policy; ``id`` makes it idempotent.
        ``queue`` picks one of the queues the task allows, ``priority`` (0..9, higher first) overrides its
        default; both are sent only when given. A task argument named like one of these options goes through
        ``submit_with``."""
        return self.submit_with(
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

    def submit_with(
        self, task: str, args: tuple[Any, ...] | builtins.list[Any], kwargs: dict[str, Any], **options: Any
    ) -> TaskHandle:
        """``submit`` with the task's arguments passed explicitly, so none can clash with an option's name."""
        body = self._json(protocol.submit_call(task, args, kwargs, **options))
        submitted = Submitted.from_json(body)
        return TaskHandle(self, submitted.id, submitted)

    def run(
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
        """Submit ``task(*args, **kwargs)`` and wait for its result (``TaskFailed``/``TaskAborted`` as
        ``result`` raises them; ``ResultTimeout`` after ``wait`` seconds, the task running on). The options are
        ``submit``'s. One request: the task's events come back on the submit's own response, so this is the
        quickest way to run a task and wait (``submit(...).result()`` makes three requests); a stream cut short
        resumes by itself, and a task that did not succeed has its final state read."""
        options = {"id": id, "delay": delay, "run_at": run_at, "timeout": timeout, "max_retries": max_retries}
        return self.run_with(task, args, kwargs, wait=wait, queue=queue, priority=priority, **options)

    def run_with(
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
        for event in self._stream(watch.task_id, 0, False, watch.deadline, submit=watch.submit):
            watch.feed(event)
        return watch.value if watch.succeeded else self.result(watch.task_id, watch.remaining())

    def task(self, name: str) -> TaskProxy:
        """Celery-style: ``client.task("resize").delay(url=...)``."""
        return TaskProxy(self, name)

    def task_handle(self, task_id: str) -> TaskHandle:
        """A handle on a task submitted earlier (no request is made)."""
        return TaskHandle(self, task_id)

    def get(self, task_id: str) -> TaskView:
        """The task's state (``TaskNotFound`` if there is no such task)."""
        return TaskView.from_json(self._json(protocol.state_call(task_id)))

    def cancel(self, task_id: str) -> str:
        """Abort: ``"aborted"`` if it was waiting, ``"aborting"`` if it is running (``NotAbortable`` if ended)."""
        return str(self._json(protocol.cancel_call(task_id))["state"])

    def retry(self, task_id: str) -> TaskHandle:
        """Run a failed or aborted task again, same id and arguments (``NotRetryable`` otherwise)."""
        submitted = Submitted.from_json(self._json(protocol.retry_call(task_id)))
        return TaskHandle(self, task_id, submitted)

    def list(
        self,
        state: str | None = None,
        task: str | None = None,
        limit: int | None = None,
        page_size: int = protocol.DEFAULT_PAGE_SIZE,
        tenant: str | None = None,
    ) -> Iterator[TaskView]:
        """Tasks, newest first, fetched a page at a time as you iterate (at most ``limit`` of them): the key's
        own tenant's; with an admin key every tenant's, or ``tenant``'s."""
        cursor: str | None = None
        yielded = 0
        while limit is None or yielded < limit:
            size = protocol.page_sizes(None if limit is None else limit - yielded, page_size)
            views, cursor = protocol.parse_page(self._json(protocol.list_call(state, task, size, cursor, tenant)))
            for view in views[:size]:
                yield view
                yielded += 1
            if cursor is None:  # a page may be empty with a cursor (its scan found no match): older tasks follow
                return

    def events(
        self, task_id: str, after: int = 0, *, until_final: bool = True, timeout: float | None = None
    ) -> Iterator[Event]:
        """The task's events after ``after``, replayed then live, each exactly once, until its ``end``
        (``ResultTimeout`` after ``timeout`` seconds, if given; the task keeps running)."""
        deadline = Deadline(task_id, timeout) if timeout is not None else None
        return self._stream(task_id, after, until_final, deadline)

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for the task to end; its result, or ``TaskFailed``/``TaskAborted``; ``ResultTimeout`` after
        ``timeout`` seconds (the task keeps running)."""
        deadline = Deadline(task_id, timeout) if timeout is not None else None
        view = self._get(task_id, deadline)
        if not view.is_final:
            for _ in self._stream(task_id, 0, True, deadline):
                pass
            view = self._get(task_id, deadline)
        return protocol.outcome(view)

    def stats(self) -> dict[str, Any]:
        """The queue (``due``, ``deferred``, ``running``) and the workers heard of lately (``GET /stats``)."""
        return self._json(protocol.stats_call())

    def arguments_schema(self, task: str) -> dict[str, Any] | None:
        """The JSON Schema the live workers publish for ``task``'s arguments; None if none offers it."""
        return protocol.arguments_schema(self._json(protocol.openapi_call()), task)

    # -- workflows (docs/workflows.md) -------------------------------------------------------------

    def workflow(self, canvas: Canvas | dict[str, Any], id: str | None = None) -> WorkflowHandle:
        """Submit a workflow (a ``relay.client.canvas`` canvas, or its JSON); ``id`` makes it idempotent."""
        body = self._json(protocol.workflow_call(as_canvas(canvas), id))
        return WorkflowHandle(self, str(body["id"]), body)

    def workflow_handle(self, flow_id: str) -> WorkflowHandle:
        """A handle on a workflow submitted earlier (no request is made)."""
        return WorkflowHandle(self, flow_id)

    def get_workflow(self, flow_id: str) -> WorkflowView:
        """The workflow's state and tree (``NotFoundError`` if there is no such workflow)."""
        return WorkflowView.from_json(self._json(protocol.workflow_state_call(flow_id)))

    def cancel_workflow(self, flow_id: str) -> str:
        """Cancel: ``"aborted"``, or ``"aborting"`` while its running steps stop (``NotAbortable`` if ended)."""
        return str((self._json(protocol.workflow_cancel_call(flow_id)))["state"])

    def retry_workflow(self, flow_id: str) -> None:
        """Run a failed or cancelled workflow again from its failed steps (``NotRetryable`` otherwise)."""
        self._json(protocol.workflow_retry_call(flow_id))

    def workflow_events(
        self, flow_id: str, after: int = 0, *, until_final: bool = True, timeout: float | None = None
    ) -> Iterator[Event]:
        """Every step's events (each tagged with its ``step``) and the workflow's own, replayed then live, each
        exactly once, until its ``workflow_end`` (resumes by itself across cut connections)."""
        deadline = Deadline(flow_id, timeout, "workflow") if timeout is not None else None
        return self._stream(flow_id, after, until_final, deadline, workflow=True)

    def workflow_result(self, flow_id: str, timeout: float | None = None) -> Any:
        """Wait for the workflow to end: its value, or ``TaskFailed``/``TaskAborted`` naming the failed step."""
        deadline = Deadline(flow_id, timeout, "workflow") if timeout is not None else None
        view = WorkflowView.from_json(self._json(protocol.workflow_state_call(flow_id), deadline))
        if not view.is_final:
            for _ in self._stream(flow_id, 0, True, deadline, workflow=True):
                pass
            view = WorkflowView.from_json(self._json(protocol.workflow_state_call(flow_id), deadline))
        return protocol.workflow_outcome(view)

    # -- the wire ---------------------------------------------------------------------------------

    def _get(self, task_id: str, deadline: Deadline | None) -> TaskView:
        return TaskView.from_json(self._json(protocol.state_call(task_id), deadline))

    def _json(self, call: Call, deadline: Deadline | None = None) -> dict[str, Any]:
        return answer_json(self._send(call, deadline))

    def _send(self, call: Call, deadline: Deadline | None = None) -> Reply:
        """One call, retried while the server says "later" or the connection fails (within the budget and
        the caller's deadline, if any)."""
        budget = RetryBudget(self.config.retry, first_contact=not self._answered)
        while True:
            try:
                response = self._sender.send(call, Timeouts.of(bounded(self.config.timeout, deadline)))
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
            time.sleep(bounded(delay, deadline))
            if deadline is not None:
                deadline.check()

    def _view_or_none(self, task_id: str, deadline: Deadline | None) -> TaskView | None:
        try:
            return self._get(task_id, deadline)
        except TaskNotFound:
            return None

    def _flow_or_none(self, flow_id: str, deadline: Deadline | None) -> WorkflowView | None:
        try:
            return WorkflowView.from_json(self._json(protocol.workflow_state_call(flow_id), deadline))
        except NotFoundError:
            return None

    def _stream(
        self,
        task_id: str,
        after: int,
        until_final: bool,
        deadline: Deadline | None,
        workflow: bool = False,
        submit: Call | None = None,
    ) -> Iterator[Event]:
        """The events of ``task_id`` after ``after``. With ``submit`` (its ``POST /tasks`` asking for a stream),
        that request opens the stream, and is sent again (idempotent by its id) until an event has come back:
        until then the task may not exist; after, a cut stream resumes with ``GET .../events?after=``."""
        first_contact = not self._answered
        follower = Follower(task_id, after, until_final, self.config.retry, first_contact, workflow=workflow)
        while True:
            if deadline is not None:
                deadline.check()
            end: ConnectionEnd = Dropped("no answer")
            call = submit if submit is not None and follower.last_seq == after else events_call(follower)
            with closing(self._connection(follower, deadline, call)) as items:
                for item in items:
                    if isinstance(item, Event):
                        yield item
                    else:
                        end = item
            step = follower.after(end)
            if step.check_state:
                view = (self._flow_or_none if workflow else self._view_or_none)(task_id, deadline)
                step = follower.after_state(view)
            if step.stop:
                return
            time.sleep(bounded(step.wait, deadline))

    def _connection(
        self, follower: Follower, deadline: Deadline | None, call: Call
    ) -> Generator[Event | ConnectionEnd, None, None]:
        """One connection's events (``call`` opens it), then how it ended."""
        try:
            response = self._sender.open(call, stream_timeouts(self.config, deadline))
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
                response.read()
                yield Refused(error_from_response(response))
                return
            last_type = ""  # the server closes a stream right after the end that is last in the log
            for line in response.iter_lines():
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
                deadline.check()  # a read cut short by the deadline is the caller's timeout, not a failure
            yield Dropped(describe(exc))
        finally:
            response.close()


class TaskHandle:
    """One task: its ``id``, its events, its result. Also what ``.delay()``/``.apply_async()`` return."""

    def __init__(self, client: Client, task_id: str, submitted: Submitted | None = None) -> None:
        self.client = client
        self.id = task_id
        self.submitted = submitted

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"

    def events(self, after: int = 0, *, until_final: bool = True, timeout: float | None = None) -> Iterator[Event]:
        """Events after ``after`` until the task ends; resumes by itself across cut connections.

        With ``until_final=False`` it stops at the first ``end``, even one followed by a manual retry."""
        return self.client.events(self.id, after, until_final=until_final, timeout=timeout)

    def result(self, timeout: float | None = None) -> Any:
        """The task's result once it ends (raises ``TaskFailed``, ``TaskAborted`` or ``ResultTimeout``)."""
        return self.client.result(self.id, timeout)

    def get(self, timeout: float | None = None) -> Any:
        """Celery's name for ``result``."""
        return self.result(timeout)

    def state(self) -> TaskView:
        return self.client.get(self.id)

    def cancel(self) -> str:
        return self.client.cancel(self.id)

    def retry(self) -> TaskHandle:
        self.submitted = self.client.retry(self.id).submitted
        return self
