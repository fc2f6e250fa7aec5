"""The traceback of a task's failure, as the task's developer needs it: from the task's own function down to
where it raised, without the frames of Relay's engine, the event loop or the thread that ran it, and bounded
in size (it is stored with the task's error unless ``RELAY_ERROR_TRACEBACKS=false``, and logged)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
import traceback
from collections.abc import Callable
from types import CodeType, TracebackType
from typing import Any, Final

import worker.context
import worker.engine
import worker.outputs

MAX_TRACEBACK_CHARS: Final = 8000
_HEAD_CHARS: Final = 2000  # of a longer one, its start (where the task's code begins) and its end are kept

# Where the frames around a task's own come from: Relay's engine and the API a task calls (its context, the
# output checks), asyncio, the task threads' machinery.
_MACHINERY: Final = tuple(
    os.path.dirname(module_file) + os.sep
    for module_file in (worker.engine.__file__, asyncio.__file__, concurrent.futures.__file__)
    if module_file
) + tuple(f for f in (worker.context.__file__, worker.outputs.__file__, threading.__file__, functools.__file__) if f)


def task_traceback(exc: BaseException, fn: Callable[..., Any]) -> str | None:
    """``exc``'s traceback from the task function ``fn`` down (chained exceptions included), at most
    ``MAX_TRACEBACK_CHARS``; None when no frame of it is the task's (an error Relay made: a timeout, an output
    over its limit)."""
    start = _task_frames(exc.__traceback__, getattr(fn, "__code__", None))
    if start is None:
        return None
    summary = traceback.TracebackException(type(exc), exc, start)
    # Raised inside Relay for the task (an event over its limit, from ``task.partial``): end at the task's call.
    while len(summary.stack) > 1 and summary.stack[-1].filename.startswith(_MACHINERY):
        summary.stack.pop()
    return bounded("".join(summary.format()))


def _task_frames(tb: TracebackType | None, code: CodeType | None) -> TracebackType | None:
    """The first traceback entry in the task's function; for a task whose function is wrapped (a decorator),
    the first one past Relay's and the event loop's frames."""
    node = tb
    while node is not None and node.tb_frame.f_code is not code:
        node = node.tb_next
    if node is not None:
        return node
    node = tb
    while node is not None and node.tb_frame.f_code.co_filename.startswith(_MACHINERY):
        node = node.tb_next
    return node


def bounded(text: str) -> str:
    """``text`` if short enough; otherwise its start and its end, saying how much was cut between."""
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    tail = MAX_TRACEBACK_CHARS - _HEAD_CHARS
    cut = len(text) - MAX_TRACEBACK_CHARS
    return f"{text[:_HEAD_CHARS]}\n... ({cut} characters cut) ...\n{text[-tail:]}"
