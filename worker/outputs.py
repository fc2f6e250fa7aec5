"""What one task may put into Redis: its result and each event it emits are bounded in bytes.

A task's output is kept for ``RELAY_RESULT_TTL_SECONDS`` in a Redis that refuses writes once full
(``noeviction``): without these limits one task returning 20 MiB, or emitting ten 10 MiB partials, holds that
memory for an hour, and a few such tasks make every submit fail. So an oversized result or event fails the
task's try (through its retry policy, like any other failure) and is never written; the event log's total is
bounded in Redis itself (``RELAY_EVENT_LOG_MAX_BYTES``, see ``relay_trim`` in ``shared/lua/lib.lua``).

A task's policy may retry these failures: ``RetryPolicy(retry_on=(ResultTooLarge,))``.
"""

from __future__ import annotations

from typing import Final

MAX_RESULT_SETTING: Final = "RELAY_MAX_RESULT_BYTES"
MAX_EVENT_SETTING: Final = "RELAY_MAX_EVENT_BYTES"
MAX_ERROR_MESSAGE_CHARS: Final = 2000  # an exception's message as stored: a huge ``str(exc)`` is cut here


class OutputTooLarge(ValueError):
    """Something a task produced is larger than Relay stores; ``kind`` says what (result, partial, progress)."""

    def __init__(self, kind: str, size: int, limit: int, setting: str) -> None:
        self.kind = kind
        self.size = size
        self.limit = limit
        self.setting = setting
        what = "the task's result" if kind == "result" else f"a {kind} event"
        super().__init__(
            f"{what} is {size} bytes as JSON; the limit is {limit} ({setting}). "
            "Store large data elsewhere and pass a reference (a URL or a key)."
        )


class ResultTooLarge(OutputTooLarge):
    """The task returned a result larger than ``RELAY_MAX_RESULT_BYTES``."""


class EventTooLarge(OutputTooLarge):
    """The task emitted an event (progress, partial) larger than ``RELAY_MAX_EVENT_BYTES``."""


def check_result(encoded: bytes, limit: int) -> None:
    """Raise ``ResultTooLarge`` when the JSON-encoded result exceeds ``limit`` bytes."""
    if len(encoded) > limit:
        raise ResultTooLarge("result", len(encoded), limit, MAX_RESULT_SETTING)


def check_event(kind: str, body: bytes, limit: int) -> None:
    """Raise ``EventTooLarge`` when the event's JSON body exceeds ``limit`` bytes."""
    if len(body) > limit:
        raise EventTooLarge(kind, len(body), limit, MAX_EVENT_SETTING)


def bounded_message(message: str) -> str:
    """An error message as stored: at most ``MAX_ERROR_MESSAGE_CHARS`` characters, saying when it was cut."""
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    cut = len(message) - MAX_ERROR_MESSAGE_CHARS
    return f"{message[:MAX_ERROR_MESSAGE_CHARS]}... ({cut} more characters not kept)"
