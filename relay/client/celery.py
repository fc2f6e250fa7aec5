"""Celery-style sugar: ``client.task("resize").delay(url=...)`` and ``.apply_async(...)``, for people coming
from Celery. Options Relay has an equivalent for are translated; the others are refused with the reason,
rather than silently ignored."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from relay.client.canvas import Map, Signature

if TYPE_CHECKING:
    from relay.client.aio import AsyncClient, AsyncTaskHandle
    from relay.client.sync import Client, TaskHandle

# Celery options that have no Relay meaning, and what to do instead.
UNSUPPORTED: dict[str, str] = {
    "expires": "Relay tasks do not expire unrun; cancel a waiting task with handle.cancel()",
    "soft_time_limit": "Relay has one (hard) timeout per task: use time_limit",
    "routing_key": "Relay routes by queue name only: use queue=",
    "exchange": "Relay routes by queue name only: use queue=",
    "link": "Relay has no callbacks: chain the tasks in a workflow, (client.task('a').s() | client.task('b').s())"
    ".delay() (docs/workflows.md)",
    "link_error": "Relay has no callbacks: a failed step fails its workflow; catch TaskFailed from its result()",
    "serializer": "Relay always sends JSON",
    "compression": "Relay always sends JSON",
    "retry": "the client retries refused or lost submits by itself (see RetryPolicy)",
    "retry_policy": "the client retries refused or lost submits by itself (see RetryPolicy)",
    "ignore_result": "Relay always keeps the result for RELAY_RESULT_TTL_SECONDS",
    "headers": "Relay tasks take only arguments",
    "shadow": "Relay shows the task's registered name",
}


def submit_options(
    args: Sequence[Any] | None,
    kwargs: dict[str, Any] | None,
    task_id: str | None,
    countdown: float | None,
    eta: dt.datetime | None,
    time_limit: float | None,
    max_retries: int | None,
    queue: str | None,
    priority: int | None,
    options: dict[str, Any],
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """``apply_async``'s arguments as ``submit``'s: (args, kwargs, options). ``priority`` is Relay's (0..9,
    higher first, as with Celery on RabbitMQ; Celery's Redis transport runs 0 first), passed as it is."""
    for name in options:
        reason = UNSUPPORTED.get(name, "it is not a Celery option Relay knows")
        raise TypeError(f"apply_async(): {name!r} is not supported by Relay: {reason}")
    if countdown is not None and eta is not None:
        raise ValueError("apply_async(): give countdown or eta, not both")
    if eta is not None and eta.tzinfo is None:
        raise ValueError("apply_async(): eta needs a timezone (e.g. datetime.now(UTC) + timedelta(minutes=5))")
    submit = {"id": task_id, "delay": countdown, "run_at": eta, "timeout": time_limit, "max_retries": max_retries}
    submit |= {"queue": queue, "priority": priority}
    return tuple(args or ()), dict(kwargs or {}), submit


class _Signatures:
    """Celery's ``.s()``, ``.si()`` and ``.map()`` on a task by name: the steps of a workflow (``canvas``)."""

    client: Client | AsyncClient
    name: str

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A step with these arguments; in a chain it takes the value before it as its first argument."""
        return Signature(self.name, args, kwargs, client=self.client)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable step: it takes no value from the steps before it."""
        return Signature(self.name, args, kwargs, immutable=True, client=self.client)

    def map(self, items: Sequence[Any] | None = None, *args: Any, **kwargs: Any) -> Map:
        """One step per item, ``task(item, *args, **kwargs)``, in parallel. Without items (``.map()``, or
        ``.map(None, *args)`` with fixed arguments), one per item of the value before it in a chain, a list known
        only when that step ended: ``list_urls.s(site) | fetch.map()``."""
        return Map(self.name, None if items is None else list(items), args, kwargs, client=self.client)


class TaskProxy(_Signatures):
    """A task by name, called the Celery way; every call returns the same ``TaskHandle`` as ``submit``."""

    def __init__(self, client: Client, name: str) -> None:
        self.client: Client = client
        self.name = name

    def delay(self, *args: Any, **kwargs: Any) -> TaskHandle:
        """Submit with these arguments (all of them go to the task, as in Celery)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        time_limit: float | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> TaskHandle:
        """Celery's ``apply_async``: ``countdown`` is Relay's ``delay``, ``eta`` its ``run_at``, ``time_limit``
        its ``timeout``; ``queue`` and ``priority`` are Relay's own."""
        a, kw, opts = submit_options(
            args, kwargs, task_id, countdown, eta, time_limit, max_retries, queue, priority, options
        )
        return self.client.submit_with(self.name, a, kw, **opts)


class AsyncTaskProxy(_Signatures):
    """``TaskProxy`` for ``AsyncClient``: ``await client.task("resize").delay(url=...)``."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client: AsyncClient = client
        self.name = name

    async def delay(self, *args: Any, **kwargs: Any) -> AsyncTaskHandle:
        return await self.apply_async(args, kwargs)

    async def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        time_limit: float | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> AsyncTaskHandle:
        a, kw, opts = submit_options(
            args, kwargs, task_id, countdown, eta, time_limit, max_retries, queue, priority, options
        )
        return await self.client.submit_with(self.name, a, kw, **opts)
