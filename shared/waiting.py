"""Waiting for an ``asyncio.Event`` with a time limit, and stopping a task, without ever losing a cancellation.

Python 3.11's ``asyncio.wait_for`` returns normally when the awaited event is set in the same loop
iteration as the waiting task is cancelled, and the cancellation is lost (CPython gh-86296, fixed in 3.12).
A worker's idle wait lost arq's shutdown cancel that way: its wake-up event was set by the very re-queue
that shutdown caused. ``asyncio.timeout`` counts cancellations and never loses one.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True if it was set. A cancellation always propagates."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


def raise_lost_cancel() -> None:
    """Raise ``CancelledError`` if the current task was cancelled and the cancellation never reached it.

    A task that was asked to stop still counts the request (``Task.cancelling()``) until someone calls
    ``uncancel()``; asyncio's own ``timeout`` does, for the cancels it makes. A task running normally
    with a count above zero is one whose cancel a library swallowed (see above): called where a
    coroutine is about to end normally, this hands the cancel back to whoever awaits it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(task: asyncio.Task[object], patience: float = 1.0) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs on: a cancel can be lost
    inside a library (Python 3.11's ``wait_for``, which redis-py uses for every write; see above), and one
    lost cancel must not hold a stopping process forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=patience)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
