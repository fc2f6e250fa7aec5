"""Following a task in a terminal: a live progress bar, partial results above it, the result at the end.

With ``--json`` the events are printed as they arrive, one JSON object per line, for scripts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from relay.cli.exitcodes import ExitCode, for_state
from relay.client import Client, Event


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Outcome:
    """What the events said, by the time the stream ended."""

    state: str = "unknown"
    result: Any = None
    error: Any = None


def follow_json(client: Client, task_id: str, wait: float | None, out: Console) -> ExitCode:
    """Every event as one NDJSON line (all the fields the API sent); the exit code says the final state."""
    outcome = Outcome()
    for event in client.events(task_id, timeout=wait):
        out.file.write(compact(event.raw) + "\n")
        out.file.flush()
        if event.type == "end":
            outcome.state = str((event.data or {}).get("state", "unknown"))
    return for_state(outcome.state)


class ProgressView:
    """The bar and the lines above it, driven by one task's events."""

    def __init__(self, task_id: str, out: Console, err: Console) -> None:
        self.task_id = task_id
        self.out = out
        self.err = err
        self.outcome = Outcome()
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        # Drawn only on a terminal: piped output gets the partials and the result, not bar frames.
        self.progress = Progress(*columns, console=out, disable=not out.is_terminal)
        self.bar: TaskID = self.progress.add_task(f"{task_id}: waiting", total=None)

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def note(self, text: str) -> None:
        """A line above the bar."""
        self.progress.console.print(text, highlight=False)

    def show(self, event: Event) -> None:
        data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
        if event.type == "started":
            self.progress.update(self.bar, description=f"running (try {data.get('try', 1)})")
        elif event.type == "progress":
            description = escape(str(data.get("message") or "running"))
            total = data.get("total")  # None keeps the bar indeterminate
            self.progress.update(self.bar, completed=data.get("current", 0), total=total, description=description)
        elif event.type == "partial":
            self.note(f"[dim]partial[/dim] {escape(compact(event.data))}")
        elif event.type == "result":
            self.outcome.result = event.data
        elif event.type == "error":
            self.outcome.error = data
        elif event.type == "retrying":
            error = data.get("error") or {}
            self.note(
                f"[yellow]try {data.get('try')} failed[/yellow] ({escape(str(error.get('error_type')))}: "
                f"{escape(str(error.get('message')))}); retrying in {data.get('delay_seconds')}s"
            )
        elif event.type == "requeued":
            self.note(f"[yellow]requeued[/yellow] ({escape(str(data.get('reason')))}): it will run again")
        elif event.type == "gap":
            self.note(f"[yellow]events {data.get('first_seq')}..{data.get('last_seq')} were dropped from the log")
        elif event.type == "end":
            self.outcome.state = str(data.get("state", "unknown"))
            self.progress.update(self.bar, description=self.outcome.state)

    def finish(self) -> ExitCode:
        """Print the result (stdout) or what went wrong (stderr); the exit code for the final state."""
        state = self.outcome.state
        if state == "succeeded":
            self.out.print_json(data=self.outcome.result)
        elif state == "failed":
            error = self.outcome.error or {}
            self.err.print(
                f"[red]task {self.task_id} failed:[/red] {escape(str(error.get('error_type', 'Error')))}: "
                f"{escape(str(error.get('message', '')))}"
            )
        elif state == "aborted":
            self.err.print(f"[yellow]task {self.task_id} was aborted[/yellow]")
        else:
            self.err.print(f"[red]task {self.task_id} ended without an outcome ({escape(state)})[/red]")
        return for_state(state)


def follow_progress(client: Client, task_id: str, wait: float | None, out: Console, err: Console) -> ExitCode:
    with ProgressView(task_id, out, err) as view:
        for event in client.events(task_id, timeout=wait):
            view.show(event)
    return view.finish()
