"""What ``relay`` exits with, so scripts can tell a failed task from an unreachable API."""

from __future__ import annotations

from enum import IntEnum

from relay.client.errors import RelayConnectionError, RelayError


class ExitCode(IntEnum):
    """The "Exit codes" table of docs/cli.md lists these (a test keeps the two in step)."""

    SUCCEEDED = 0  # the task succeeded (or the command did what it was asked)
    FAILED = 1  # the task failed (or ended without an outcome)
    USAGE = 2  # bad options or arguments (click's own code)
    ABORTED = 3  # the task was aborted
    TIMEOUT = 4  # --wait ran out; the task keeps running
    UNAVAILABLE = 5  # the API could not be reached, or stayed unavailable (503/429) past the retry budget
    REJECTED = 6  # the API refused the request (unknown task, bad arguments, no such id, ...)
    INTERRUPTED = 130  # Ctrl-C while following; the task keeps running


FINAL_STATE_CODES = {"succeeded": ExitCode.SUCCEEDED, "failed": ExitCode.FAILED, "aborted": ExitCode.ABORTED}


def for_state(state: str) -> ExitCode:
    return FINAL_STATE_CODES.get(state, ExitCode.FAILED)


def for_error(error: RelayError) -> ExitCode:
    unreachable = error.retryable or isinstance(error, RelayConnectionError)
    return ExitCode.UNAVAILABLE if unreachable else ExitCode.REJECTED
