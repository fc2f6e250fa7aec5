"""``relay``: the command line over ``relay.client`` (click for the options, rich for what is shown)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from relay.cli import workflows
from relay.cli.args import task_arguments
from relay.cli.common import err, handles_errors, json_option, out, show_retries, wait_option
from relay.cli.exitcodes import ExitCode
from relay.cli.follow import compact, follow_json, follow_progress
from relay.cli.tables import print_table
from relay.cli.views import stats_table, task_table, view_table, worker_table
from relay.client import Client, ClientError, ResultTimeout, RetryPolicy
from relay.client.models import STATES

# A first try that finds no API is retried this long at most (with a line per retry), not --retry-wait: a typo'd
# port or an API not started yet is said within seconds. Once the API has answered, --retry-wait applies.
FIRST_CONTACT_WAIT_SECONDS = 3.0


@dataclass(frozen=True)
class Target:
    """Where the API is: from ``--url``/``--api-key`` or ``RELAY_URL``/``RELAY_API_KEY``."""

    url: str | None
    api_key: str | None
    retry_wait: float

    def client(self) -> Client:
        policy = RetryPolicy(
            max_wait_seconds=self.retry_wait,
            first_contact_wait_seconds=min(self.retry_wait, FIRST_CONTACT_WAIT_SECONDS),
        )
        try:
            return Client(self.url, self.api_key, retry=policy)
        except ValueError as exc:  # a URL no retry can make work
            raise click.BadParameter(str(exc), param_hint="--url / RELAY_URL") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="RELAY_URL", metavar="URL", help="The API's base URL (default http://127.0.0.1:8000).")
@click.option("--api-key", envvar="RELAY_API_KEY", metavar="KEY", help="API key, if the API requires one.")
@click.option(
    "--retry-wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to keep retrying while the API is unreachable or says 503/429.",
)
@click.pass_context
def cli(ctx: click.Context, url: str | None, api_key: str | None, retry_wait: float) -> None:
    """Submit Relay tasks and follow them. Exit codes: 0 succeeded, 1 failed, 2 usage, 3 aborted,
    4 --wait ran out, 5 API unreachable or unavailable, 6 request refused, 130 interrupted."""
    show_retries()
    ctx.obj = Target(url, api_key, retry_wait)


def arguments_schema(client: Client, task: str) -> dict[str, Any] | None:
    """The task's published argument schema, to type ``--arg`` values by; None when the API has none for it
    (the submit then says why: an unknown task, with the names it knows)."""
    try:
        return client.arguments_schema(task)
    except ClientError:  # an API without /openapi.json: values are guessed, as before it had one
        return None


def follow_task(client: Client, task_id: str, as_json: bool, wait: float | None) -> ExitCode:
    """Follow until the task ends; Ctrl-C and ``--wait`` stop following, never the task."""
    try:
        if as_json:
            return follow_json(client, task_id, wait, out())
        return follow_progress(client, task_id, wait, out(), err())
    except KeyboardInterrupt:
        err().print(
            f"Stopped following task {task_id}; it keeps running. Cancel it with: relay cancel {task_id}",
            highlight=False,
        )
        return ExitCode.INTERRUPTED
    except ResultTimeout as exc:
        err().print(f"{exc}. Cancel it with: relay cancel {task_id}", highlight=False)
        return ExitCode.TIMEOUT


@cli.command()
@click.argument("task")
@click.option(
    "--arg",
    "-a",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A task argument, typed by the task's schema (message=123 is a string if message is one).",
)
@click.option("--args-json", metavar="JSON", help="Arguments as a JSON object (or array, for positional ones).")
@click.option("--id", "task_id", metavar="ID", help="Your own task id: submitting it again does not run it twice.")
@click.option("--delay", type=click.FloatRange(min=0), metavar="SECONDS", help="Run it this much later.")
@click.option("--run-at", metavar="ISO-8601", help="Run it at this time (with a timezone).")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="The task's time limit."
)
@click.option("--max-retries", type=click.IntRange(min=0), help="At most this many retries after failures.")
@click.option("--queue", metavar="NAME", help="One of the queues the task allows (default: the task's own).")
@click.option(
    "--priority",
    type=click.IntRange(0, 9),
    metavar="0-9",
    help="Higher is claimed first (default: the task's own, else 0, the lowest).",
)
@click.option("--follow", "-f", is_flag=True, help="Show its progress live and end with its result.")
@json_option
@wait_option
@click.pass_obj
@handles_errors
def submit(
    target: Target,
    task: str,
    pairs: tuple[str, ...],
    args_json: str | None,
    task_id: str | None,
    delay: float | None,
    run_at: str | None,
    timeout: float | None,
    max_retries: int | None,
    queue: str | None,
    priority: int | None,
    follow: bool,
    as_json: bool,
    wait: float | None,
) -> int:
    """Submit TASK; prints its id (or, with --follow, its progress and result)."""
    options: dict[str, Any] = {"id": task_id, "delay": delay, "run_at": run_at, "timeout": timeout}
    options |= {"max_retries": max_retries, "queue": queue, "priority": priority}
    with target.client() as client:
        args, kwargs = task_arguments(pairs, args_json, arguments_schema(client, task) if pairs else None)
        try:
            handle = client.submit_with(task, args, kwargs, **options)
        except ValueError as exc:  # options that cannot go together, caught before anything is sent
            raise click.UsageError(str(exc)) from None
        if follow:
            return follow_task(client, handle.id, as_json, wait)
    if as_json and handle.submitted is not None:
        click.echo(compact({"id": handle.id, "task": handle.submitted.task, "state": handle.submitted.state}))
    else:
        click.echo(handle.id)
    return ExitCode.SUCCEEDED


@cli.command()
@click.argument("task_id", metavar="ID")
@json_option
@wait_option
@click.pass_obj
@handles_errors
def follow(target: Target, task_id: str, as_json: bool, wait: float | None) -> int:
    """Follow task ID from its first event until it ends (Ctrl-C stops following, not the task)."""
    with target.client() as client:
        return follow_task(client, task_id, as_json, wait)


@cli.command()
@click.argument("task_id", metavar="ID")
@json_option
@click.pass_obj
@handles_errors
def status(target: Target, task_id: str, as_json: bool) -> int:
    """Show task ID's state, queue and priority, why it waits, its result or error, and times."""
    with target.client() as client:
        view = client.get(task_id)
    if as_json:
        click.echo(compact(view.raw))
    else:
        out().print(view_table(view))
    return ExitCode.SUCCEEDED


@cli.command()
@click.argument("task_id", metavar="ID")
@click.pass_obj
@handles_errors
def cancel(target: Target, task_id: str) -> int:
    """Abort task ID: removed at once if waiting, cancelled by its worker if running."""
    with target.client() as client:
        click.echo(client.cancel(task_id))
    return ExitCode.SUCCEEDED


@cli.command()
@click.argument("task_id", metavar="ID")
@click.pass_obj
@handles_errors
def retry(target: Target, task_id: str) -> int:
    """Run failed or aborted task ID again (same id and arguments; `relay follow ID` shows the new run)."""
    with target.client() as client:
        handle = client.retry(task_id)
    click.echo(handle.submitted.state if handle.submitted else "queued")
    return ExitCode.SUCCEEDED


@cli.command(name="ls")
@click.option("--state", type=click.Choice(sorted(STATES)), help="Only tasks in this state.")
@click.option("--task", metavar="NAME", help="Only tasks with this name.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many.")
@click.option("--tenant", metavar="NAME", help="Only this tenant's tasks (an admin key; others see only their own).")
@json_option
@click.pass_obj
@handles_errors
def ls(target: Target, state: str | None, task: str | None, limit: int, tenant: str | None, as_json: bool) -> int:
    """List your tasks (an admin key: every tenant's), newest first."""
    with target.client() as client:
        views = list(client.list(state=state, task=task, limit=limit, tenant=tenant))
    if as_json:
        for view in views:
            click.echo(compact(view.raw))
        return ExitCode.SUCCEEDED
    columns, rows = task_table(views)
    print_table(out(), columns, rows)
    return ExitCode.SUCCEEDED


@cli.command()
@json_option
@click.pass_obj
@handles_errors
def stats(target: Target, as_json: bool) -> int:
    """The queue (due, deferred, running), how many workers serve it, and each named queue's counts."""
    with target.client() as client:
        body = client.stats()
    if as_json:
        click.echo(compact(body))
        return ExitCode.SUCCEEDED
    columns, rows = stats_table(body)
    print_table(out(), columns, rows)
    return ExitCode.SUCCEEDED


@cli.command()
@json_option
@click.pass_obj
@handles_errors
def workers(target: Target, as_json: bool) -> int:
    """The workers of the API's queue heard of in the last minute: alive, stopping or silent."""
    with target.client() as client:
        found = client.stats().get("workers") or []
    if as_json:
        for worker in found:
            click.echo(compact(worker))
        return ExitCode.SUCCEEDED
    columns, rows = worker_table(found)
    if not rows:
        err().print("No worker of this queue was heard of in the last minute.", highlight=False)
        return ExitCode.SUCCEEDED
    print_table(out(), columns, rows)
    return ExitCode.SUCCEEDED


cli.add_command(workflows.workflow)


def main() -> None:
    """The console script."""
    cli(prog_name="relay")
