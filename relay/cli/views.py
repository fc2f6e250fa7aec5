"""How the commands show what the API returns: a task's view, and the rows of ``ls``, ``stats`` and ``workers``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from relay.cli.follow import compact
from relay.cli.tables import Cell, Column
from relay.client import TaskView

STATE_STYLE = {"succeeded": "green", "failed": "red", "aborted": "yellow", "running": "cyan", "retrying": "magenta"}
WORKER_STYLE = {"alive": "green", "stopping": "yellow", "silent": "red"}

Rows = tuple[list[Column], list[list[Cell]]]


def view_table(view: TaskView) -> Table:
    """``relay status``: a task's state, result or error, and times."""
    table = Table(show_header=False, box=None)
    style = STATE_STYLE.get(view.state, "")
    rows: list[tuple[str, str]] = [
        ("id", view.id),
        ("task", view.task),
        *([("queue", escape(view.queue))] if view.queue is not None else []),
        *([("priority", str(view.priority))] if view.priority is not None else []),
        ("state", f"[{style}]{view.state}[/]" if style else view.state),
        ("tries", str(view.tries)),
        ("arguments", escape(compact(view.arguments))),
    ]
    if view.waiting_reason:
        rows.append(("waiting", escape(view.waiting_reason)))
    if view.state == "succeeded":
        rows.append(("result", escape(compact(view.result))))
    for name, error in (("error", view.error), ("last error", view.last_error)):
        if error is not None:
            rows.append((name, escape(f"{error.error_type}: {error.message}")))
    for name, instant in (
        ("enqueued", view.enqueued_at),
        ("scheduled for", view.scheduled_for),
        ("next try", view.next_try_at),
        ("started", view.started_at),
        ("finished", view.finished_at),
    ):
        if instant is not None:
            rows.append((name, instant.isoformat(timespec="seconds")))
    for row in rows:
        table.add_row(f"[bold]{row[0]}[/bold]", row[1])
    return table


def task_table(views: Sequence[TaskView]) -> Rows:
    """``relay ls``: one row per task; the id is whole, as ``relay status`` takes it. The queue and priority
    columns are there when the API sends them (an API without named queues does not); a terminal too narrow
    for the whole row leaves out the priority, then the queue, rather than cut every cell short."""
    queues = any(view.queue is not None for view in views)
    priorities = any(view.priority is not None for view in views)
    columns = [Column("task")]
    columns += [Column("queue", optional=True)] if queues else []
    columns += [Column("priority", whole=True, optional=True)] if priorities else []
    columns += [Column("state", whole=True), Column("tries", whole=True)]
    columns += [Column("enqueued"), Column("finished"), Column("id", whole=True)]
    rows = [
        [
            Cell(view.task),
            *([Cell(view.queue or "")] if queues else []),
            *([Cell("" if view.priority is None else str(view.priority))] if priorities else []),
            Cell(view.state, STATE_STYLE.get(view.state, "")),
            Cell(str(view.tries)),
            when(view.enqueued_at),
            when(view.finished_at),
            Cell(view.id),
        ]
        for view in views
    ]
    return columns, rows


def stats_table(body: Mapping[str, Any]) -> Rows:
    """``relay stats``: the queue's counts, its workers by status, and each named queue's counts (from an API
    that has them)."""
    queue, workers = body.get("queue") or {}, body.get("workers") or []
    by_status: dict[str, int] = {}
    for worker in workers:
        by_status[str(worker.get("status"))] = by_status.get(str(worker.get("status")), 0) + 1
    slots = sum(int(w.get("concurrency") or 0) for w in workers if w.get("status") == "alive")
    pairs = [
        ("queue", str(queue.get("name", ""))),
        ("due", str(queue.get("due", ""))),
        ("running", str(queue.get("running", ""))),
        ("deferred", str(queue.get("deferred", ""))),
        ("workers", ", ".join(f"{n} {status}" for status, n in sorted(by_status.items())) or "none"),
        ("slots", f"{slots} (the alive workers' concurrency)"),
    ]
    pairs += [(f"queue {q.get('name')}", queue_counts(q)) for q in body.get("queues") or []]
    return [Column("what"), Column("value")], [[Cell(k), Cell(v)] for k, v in pairs]


def queue_counts(queue: Mapping[str, Any]) -> str:
    """A named queue of ``GET /stats``'s ``queues``: ``3 due, 0 deferred, 1 running``."""
    return ", ".join(f"{queue.get(count, '?')} {count}" for count in ("due", "deferred", "running"))


def worker_table(workers: Sequence[Mapping[str, Any]]) -> Rows:
    """``relay workers``: one row per worker of ``GET /stats``; the named queues each serves, earlier first,
    when the API sends them (a terminal too narrow for the whole row leaves them out)."""
    queues = any("queues" in w for w in workers)
    columns = [Column("id", whole=True), Column("status", whole=True), Column("running", whole=True)]
    columns += [Column("queues", optional=True)] if queues else []
    columns += [Column("seen"), Column("started"), Column("outcomes")]
    rows = [
        [
            Cell(str(w.get("id"))),
            Cell(str(w.get("status")), WORKER_STYLE.get(str(w.get("status")), "")),
            Cell(f"{w.get('running', 0)}/{w.get('concurrency', '?')}"),
            *([Cell(",".join(str(q) for q in w.get("queues") or []))] if queues else []),
            Cell(f"{w.get('seen_seconds_ago', '?')}s ago"),
            when(_instant(w.get("started_at"))),
            Cell(" ".join(f"{k}={v}" for k, v in sorted((w.get("totals") or {}).items()))),
        ]
        for w in workers
    ]
    return columns, rows


def _instant(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def when(instant: dt.datetime | None) -> Cell:
    """A time as a cell: ISO 8601 in UTC whole (for pipes), and short in local time for a terminal."""
    if instant is None:
        return Cell("")
    local = instant.astimezone()
    same_day = local.date() == dt.datetime.now().astimezone().date()
    return Cell(instant.isoformat(timespec="seconds"), short=local.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M"))
