"""A worker that stops ends the watches its claims wrote (shared/keys.py "Watched due times") and tells every
worker, even those of a claim still on its way as the stop began: the other workers leave a watched lane to its
watcher, so a watch left behind by a stopped worker kept a deferred job from being claimed at its time (it waited
for a poll), and deferred enqueues into that lane told nobody.

A real engine claims from a real Redis; the stop lands while the claim is on the wire."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.settings import Settings
from tests.support.claims import Submitter, lose_the_reply
from worker.engine.engine import Engine
from worker.tasks import load

LANE = "stamp|default|0||"  # the lane of a plain ``stamp`` job (shared/lanes.py)


def arq_worker() -> SimpleNamespace:
    """What ``Engine._claim`` reads and writes of arq's Worker."""
    return SimpleNamespace(max_jobs=10, tasks={}, job_counter=0, allow_pick_jobs=True)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:sw:{uuid.uuid4().hex[:8]}", handoff=False)


def engine_of(pool: ArqRedis, settings: Settings) -> tuple[Engine, list[list[Any]]]:
    """An engine whose wake-up calls (``wake_all.lua``) are recorded as they go to Redis."""
    engine = Engine(pool, settings, load(["worker.tasks.demo", "tests.support.tasks"]))
    told: list[list[Any]] = []
    real = engine.scripts.wake_all

    async def wake_all(keys: list[str], args: list[Any]) -> Any:
        told.append(args)
        return await real(keys=keys, args=args)

    engine.scripts.wake_all = wake_all  # type: ignore[method-assign]
    return engine, told


async def watcher_of(pool: ArqRedis, settings: Settings) -> bytes | None:
    value: bytes | None = await pool.get(keys.due_watch(settings.queue_name, LANE))
    return value


async def until_told(told: list[list[Any]]) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not told:
        assert asyncio.get_running_loop().time() < deadline, "no worker was told within 10 s"
        await asyncio.sleep(0.02)


async def test_a_stop_that_lands_while_a_claim_is_on_its_way_ends_the_watches_it_wrote(
    pool: ArqRedis, settings: Settings
) -> None:
    await Submitter(pool, settings).submit("stamp", delay_seconds=60)
    engine, told = engine_of(pool, settings)
    real = engine.scripts.claim

    async def claim(**kwargs: Any) -> Any:
        reply = await real(**kwargs)
        engine.begin_stop(0)  # the signal, handled while the reply was on its way
        return reply

    engine.scripts.claim = claim  # type: ignore[method-assign]
    await engine._claim(arq_worker())  # type: ignore[arg-type]
    await until_told(told)
    assert await watcher_of(pool, settings) is None
    assert told[0][1].startswith(b"d")  # every worker hears of the deferred job
    assert engine.promises.next_ms() is None


@pytest.mark.parametrize("took_a_job", [False, True], ids=["watch-only", "with-a-job"])
async def test_a_claim_cut_short_by_the_stop_has_its_watches_ended_as_its_jobs_are_handed_back(
    pool: ArqRedis, settings: Settings, took_a_job: bool
) -> None:
    """arq cancels its main loop mid-call once no job runs: the stop sends the claim again to hand its jobs back.
    A claim that took jobs is replayed (its batch and, now, its watches); one that took none runs anew."""
    submitter = Submitter(pool, settings)
    if took_a_job:
        await submitter.submit("stamp")
    await submitter.submit("stamp", delay_seconds=60)
    engine, told = engine_of(pool, settings)
    lose_the_reply(engine, asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await engine._claim(arq_worker())  # type: ignore[arg-type]
    assert (await watcher_of(pool, settings) or b"").endswith(engine.token.encode())  # the claim wrote it
    engine.begin_stop(0)
    await engine.stop()
    assert await watcher_of(pool, settings) is None
    assert [args[1][:1] for args in told] == [b"d"]
