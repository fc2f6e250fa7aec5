"""``wait_set`` never loses a cancellation, even one that arrives as the event is set (what shutdown does to
an idle worker: its own re-queue sets the wake-up event while arq cancels the main task)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shared.waiting import raise_lost_cancel, wait_set

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


async def lose_a_cancel_then_check() -> str:
    """What Python 3.11's ``wait_for`` does to a cancel that meets its result (see above), then the check."""
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_for_event(event, 10))
    await asyncio.sleep(0)
    event.set()
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
    try:
        await waiter
    except asyncio.CancelledError:
        return "the cancel arrived"
    raise_lost_cancel()
    return "the cancel was lost for good"


async def test_a_lost_cancel_is_raised_again() -> None:
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("wait_for loses no cancel from 3.12 (CPython gh-86296)")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(lose_a_cancel_then_check())


async def test_a_cancel_asyncio_timeout_made_and_took_back_is_not_raised() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()
    raise_lost_cancel()  # the timeout's own cancel was counted and uncounted: nothing to hand back
