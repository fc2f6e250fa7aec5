"""A cancel lost inside a library still stops what it was meant to stop.

Python 3.11's ``asyncio.wait_for`` returns normally when its inner future completes in the same loop turn as
the cancel (CPython gh-86296), and redis-py wraps every command's write in one: seen as a worker that
got SIGINT during a Redis call, stopped claiming and never exited. Here the loss is made on purpose, the
way that ``wait_for`` loses it (the CancelledError caught, the cancel request left counted).
"""

from __future__ import annotations

import asyncio
import contextlib

from arq.connections import ArqRedis

from shared.settings import get_settings
from shared.waiting import cancel_and_wait
from worker.engine.engine import Engine
from worker.tasks import registry


async def lose_a_cancel() -> None:
    """Cancel the current task and swallow it, as 3.11's wait_for does when its future is already done."""
    asyncio.current_task().cancel()  # type: ignore[union-attr]
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(1)


async def test_arq_main_loop_stops_when_its_cancel_was_lost_in_an_iteration() -> None:
    engine = Engine(ArqRedis(host="127.0.0.1", port=1), get_settings(), registry)  # never connects here
    iterations = 0

    async def main_like_arqs() -> None:  # arq's Worker.main: `async for _ in poll(...): await iteration`
        nonlocal iterations
        async for _ in engine.timer(0.05):
            iterations += 1
            if iterations == 2:
                await lose_a_cancel()  # arq's shutdown cancel, lost inside a Redis call

    main = asyncio.create_task(main_like_arqs())
    done, _ = await asyncio.wait({main}, timeout=5)
    if not done:
        main.cancel()
    assert main in done, f"the loop ran on after its cancel ({iterations} iterations)"
    assert main.cancelled()
    assert iterations == 2  # it stopped before sleeping again


async def test_the_timer_keeps_running_without_a_cancel() -> None:
    engine = Engine(ArqRedis(host="127.0.0.1", port=1), get_settings(), registry)
    ticks = 0
    async for _ in engine.timer(0.01):
        ticks += 1
        if ticks == 5:
            break
    assert ticks == 5


async def test_cancel_and_wait_stops_a_task_that_lost_its_first_cancel() -> None:
    started = asyncio.Event()
    lost = 0

    async def loses_one() -> None:
        nonlocal lost
        started.set()
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # swallowed: the task runs on
                asyncio.current_task().uncancel()  # type: ignore[union-attr]  # as if never asked

    task = asyncio.create_task(loses_one())
    await started.wait()
    await asyncio.wait_for(cancel_and_wait(task, patience=0.05), 5)
    assert task.cancelled()
    assert lost == 1
