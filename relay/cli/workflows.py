"""``relay workflow ...``: submit a workflow (its canvas as JSON, docs/workflows.md), follow its one stream, show
its tree, cancel it, retry it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from relay.cli.common import err, handles_errors, json_option, out, wait_option
from relay.cli.exitcodes import ExitCode, for_state
from relay.cli.follow import compact
from relay.client import Client, Event, ResultTimeout, WorkflowView

if TYPE_CHECKING:
    from relay.cli.app import Target  # the commands get it from the group (click's obj); app imports this module

STYLE = {"succeeded": "green", "failed": "red", "aborted": "yellow", "skipped": "dim", "running": "cyan"}


def read_canvas(canvas: str | None, file: Path | None) -> dict[str, Any]:
    """The canvas from the argument or the file (``-`` reads stdin), as JSON: ``{"chain": [...]}``, or a whole
    ``{"workflow": ..., "id": ...}`` body."""
    if (canvas is None) == (file is None):
        raise click.UsageError("give the canvas as an argument or with --file, not both")
    if canvas is not None:
        text = canvas
    elif str(file) == "-":
        text = sys.stdin.read()
    else:
        assert file is not None
        text = file.read_text()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"the canvas is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise click.UsageError('the canvas must be a JSON object, e.g. {"chain": [{"task": "add", "args": [2, 2]}]}')
    return value


def follow_workflow(client: Client, flow_id: str, as_json: bool, wait: float | None, console: Console) -> ExitCode:
    """Every event until ``workflow_end`` (NDJSON with ``--json``, else one line per step event); the exit code
    says how the workflow ended. Notices go to stderr: stdout stays the events (NDJSON a script can parse)."""
    state = "unknown"
    try:
        for event in client.workflow_events(flow_id, timeout=wait):
            if as_json:
                console.file.write(compact(event.raw) + "\n")
                console.file.flush()
            else:
                line = describe(event)
                if line:
                    # Plain text: a step's message ("copying [/data/in.csv]") is the task's, not rich markup.
                    console.print(line, highlight=False, markup=False)
            if event.type == "workflow_end":
                state = str((event.data or {}).get("state", "unknown"))
    except KeyboardInterrupt:
        err().print(
            f"Stopped following workflow {flow_id}; it keeps running. Cancel it: relay workflow cancel {flow_id}",
            highlight=False,
            markup=False,
        )
        return ExitCode.INTERRUPTED
    except ResultTimeout as exc:
        err().print(f"{exc}. Cancel it with: relay workflow cancel {flow_id}", highlight=False, markup=False)
        return ExitCode.TIMEOUT
    return for_state(state)


def describe(event: Event) -> str | None:
    """One line for a person: what happened to which step (plain text, to be printed without markup)."""
    step = event.raw.get("step")
    who = f"step {step}" if step is not None else "workflow"
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "step_started" and isinstance(data.get("members"), dict):  # a map over the value before it
        first, count = data["members"].get("first", 0), data["members"].get("count", 0)
        members = f"steps {first} to {first + count - 1}" if count else "no steps"
        return f"{who} map {data.get('task', '')}: expanded into {members}"
    if event.type == "step_started":
        return f"{who} {data.get('task', '')}: queued"
    if event.type == "step_ended":
        error = data.get("error") or {}
        extra = f" ({error.get('error_type')}: {error.get('message')})" if error else ""
        return f"{who}: {data.get('state')}{extra}"
    if event.type == "started":
        return f"{who} {event.task_id}: started (try {data.get('try')})"
    if event.type == "progress":
        return f"{who} {event.task_id}: {data.get('current')}/{data.get('total')} {data.get('message') or ''}".rstrip()
    if event.type == "result":
        return f"{who} {event.task_id}: result {compact(event.data)}"
    if event.type == "workflow_end":
        if data.get("state") == "succeeded":
            return f"workflow succeeded: {compact(data.get('result'))}"
        return f"workflow {data.get('state')}: {compact(data.get('error'))}"
    return None


def tree_of(view: WorkflowView) -> Tree:
    """The workflow as a tree: its chains, groups and chords, each step with its state."""
    root = Tree(f"[bold]{escape(view.id)}[/bold] [{STYLE.get(view.state, 'white')}]{view.state}[/]")

    def add(parent: Tree, node: dict[str, Any]) -> None:
        if node.get("kind") == "task":
            state = str(node.get("state"))
            label = f"{node.get('step')}. {escape(str(node.get('task')))} [{STYLE.get(state, 'white')}]{state}[/]"
            parent.add(label)
            return
        label = f"[bold]{node.get('kind')}[/bold]"
        if node.get("kind") == "map":
            label += f" {escape(str(node.get('task')))}"
        if node.get("state"):  # a map over the value before it: a step of its own, with its state
            state = str(node["state"])
            label = f"{node.get('step')}. {label} [{STYLE.get(state, 'white')}]{state}[/]"
        branch = parent.add(label)
        for child in node.get("children") or []:
            add(branch, child)
        if node.get("callback"):
            add(branch.add("[bold]callback[/bold]"), node["callback"])

    add(root, view.tree)
    if view.state == "succeeded":
        root.add(escape(f"result: {compact(view.result)}"))
    elif view.error:
        root.add(escape(f"error: {compact(view.error)}"))
    return root


@click.group()
def workflow() -> None:
    """Workflows: chains, groups and chords of tasks (docs/workflows.md)."""


@workflow.command(name="submit")
@click.argument("canvas", required=False)
@click.option("--file", "-F", type=click.Path(path_type=Path, allow_dash=True), help="Read the canvas here (-: stdin).")
@click.option("--id", "flow_id", metavar="ID", help="Your own id: submitting it again does not run it twice.")
@click.option("--follow", "-f", is_flag=True, help="Show its steps' events live and end with its value.")
@json_option
@wait_option
@click.pass_obj
@handles_errors
def submit(
    target: Target,
    canvas: str | None,
    file: Path | None,
    flow_id: str | None,
    follow: bool,
    as_json: bool,
    wait: float | None,
) -> int:
    """Submit the workflow CANVAS (JSON: '{"chain": [{"task": "add", "args": [2, 2]}, {"task": "mul", "args":
    [4]}]}'); prints its id (or, with --follow, its events and value)."""
    body = read_canvas(canvas, file)
    if "workflow" in body:
        flow_id = flow_id or body.get("id")
        body = body["workflow"]
    with target.client() as client:
        handle = client.workflow(body, id=flow_id)
        if follow:
            return follow_workflow(client, handle.id, as_json, wait, out())
    click.echo(compact(handle.submitted) if as_json else handle.id)
    return ExitCode.SUCCEEDED


@workflow.command(name="follow")
@click.argument("flow_id", metavar="ID")
@json_option
@wait_option
@click.pass_obj
@handles_errors
def follow_command(target: Target, flow_id: str, as_json: bool, wait: float | None) -> int:
    """Follow workflow ID from its first event until it ends (Ctrl-C stops following, not the workflow)."""
    with target.client() as client:
        return follow_workflow(client, flow_id, as_json, wait, out())


@workflow.command(name="status")
@click.argument("flow_id", metavar="ID")
@json_option
@click.pass_obj
@handles_errors
def status(target: Target, flow_id: str, as_json: bool) -> int:
    """Show workflow ID's tree, each step with its state, and its value or error."""
    with target.client() as client:
        view = client.get_workflow(flow_id)
    if as_json:
        click.echo(compact(view.raw))
    else:
        out().print(tree_of(view))
    return ExitCode.SUCCEEDED


@workflow.command(name="cancel")
@click.argument("flow_id", metavar="ID")
@click.pass_obj
@handles_errors
def cancel(target: Target, flow_id: str) -> int:
    """Cancel workflow ID: its waiting steps are aborted, its running ones cancelled, nothing more starts."""
    with target.client() as client:
        click.echo(client.cancel_workflow(flow_id))
    return ExitCode.SUCCEEDED


@workflow.command(name="retry")
@click.argument("flow_id", metavar="ID")
@click.pass_obj
@handles_errors
def retry(target: Target, flow_id: str) -> int:
    """Run failed or cancelled workflow ID again from its failed steps."""
    with target.client() as client:
        client.retry_workflow(flow_id)
    click.echo("running")
    return ExitCode.SUCCEEDED
