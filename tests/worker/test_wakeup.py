"""The wakeable poll timer keeps arq's contract and ends its sleep on a notice."""

from __future__ import annotations

import asyncio

from worker.wakeup import wakeable_poll


async def test_a_notice_ends_the_sleep_at_once() -> None:
    wake = asyncio.Event()
    timer = wakeable_poll(wake)(3600)
    assert await anext(timer) >= 0  # the first poll happens immediately, as in arq
    nxt = asyncio.ensure_future(anext(timer))
    await asyncio.sleep(0)
    assert not nxt.done()
    wake.set()
    await asyncio.wait_for(nxt, 5)  # without the notice this would take an hour


async def test_a_notice_during_a_poll_is_not_lost() -> None:
    wake = asyncio.Event()
    timer = wakeable_poll(wake)(3600)
    await anext(timer)
    wake.set()  # arrives while "arq" is still polling
    await asyncio.wait_for(anext(timer), 5)


async def test_without_notices_it_still_polls_every_step() -> None:
    timer = wakeable_poll(asyncio.Event())(0.01)
    await anext(timer)
    elapsed = [await asyncio.wait_for(anext(timer), 5) for _ in range(3)]
    assert elapsed == sorted(elapsed)
    assert elapsed[-1] >= 0.03
