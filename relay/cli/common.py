"""What every ``relay`` command shares: how refusals become exit codes, the consoles, common options."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec

import click
from rich.console import Console
from rich.markup import escape

from relay.cli.exitcodes import ExitCode, for_error
from relay.cli.follow import compact
from relay.client import RelayConnectionError, RelayError, UnauthorizedError

P = ParamSpec("P")


def show_retries() -> None:
    """Each retry the client makes (it logs one WARNING per retry) as a line on stderr: a wait is never silent."""
    logger = logging.getLogger("relay.client")
    if not any(getattr(h, "relay_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()  # stderr: stdout stays the command's output
        handler.setFormatter(logging.Formatter("relay: %(message)s"))
        handler.relay_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def out() -> Console:
    return Console(soft_wrap=True)


def err() -> Console:
    return Console(stderr=True, soft_wrap=True)


def handles_errors(command: Callable[P, int]) -> Callable[P, None]:
    """Turn the command's exit code, and a refusal of the API, into the process's exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            code = command(*args, **kwargs)
        except RelayError as exc:
            details = f"\n{compact(exc.details)}" if exc.details not in (None, {}, []) else ""
            err().print(f"[red]error:[/red] {escape(str(exc))}{escape(details)}")
            advice = hint(exc)
            if advice:
                err().print(advice, highlight=False, markup=False)
            code = for_error(exc)
        except KeyboardInterrupt:  # outside a follow, e.g. while a submit waits out a 503
            err().print("Interrupted.")
            code = ExitCode.INTERRUPTED
        raise SystemExit(code)

    return wrapper


def hint(exc: RelayError) -> str | None:
    """What to do about a refusal the command line's own options can fix."""
    if isinstance(exc, UnauthorizedError):
        return "The API wants a key: pass it with --api-key KEY or set RELAY_API_KEY."
    if isinstance(exc, RelayConnectionError):
        return "Is the API running there? Point relay at it with --url URL or RELAY_URL."
    return None


wait_option = click.option(
    "--wait", type=click.FloatRange(min=0), metavar="SECONDS", help="Stop following after this long (exit 4)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (NDJSON for events).")
