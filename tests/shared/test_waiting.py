"""``wait_set`` never loses a cancellation, even one that arrives as the event is set (what shutdown does to
an idle worker: its own re-queue sets the wake-up event while arq cancels the main task)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shared.waiting import wait_set

Wait = Callable[[asyncio.Event, float], Awaitable[object]]


async def wait_for_event(event: asyncio.Event, seconds: float) -> object:
    return await asyncio.wait_for(event.wait(), seconds)


async def cancel_as_the_event_is_set(wait: Wait) -> bool:
    """True when the waiting task saw the cancellation."""
    event = asyncio.Event()
    task = asyncio.create_task(wait(event, 10))
    await asyncio.sleep(0)  # the task now waits on the event
    event.set()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


async def test_a_cancel_that_meets_the_event_is_not_lost() -> None:
    assert await cancel_as_the_event_is_set(wait_set)


async def test_python_311s_wait_for_loses_it_which_is_why_wait_set_exists() -> None:
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("fixed in 3.12 (CPython gh-86296)")
    assert not await cancel_as_the_event_is_set(wait_for_event)


async def test_it_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 10) is True
