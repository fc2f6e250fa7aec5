"""A poll that failed on a Redis error is followed by one a whole step later, not at once: what would end the sleep
at once (a watch whose time has come, an abort notice) is still pending after the failure, and a Redis refusing
writes (OOM, MISCONF: errors the client does not retry) was asked again in a tight loop, tens of thousands of
claims a second, each logging a warning."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from arq.connections import ArqRedis
from redis.exceptions import OutOfMemoryError

from shared.settings import Settings
from worker.engine.engine import Engine
from worker.engine.run import JobRun
from worker.tasks import load

NOTHING = [[], [], None, None, None, [0, 0]]  # claim.lua's reply when nothing is queued or running
CHANNEL = b"relay:wakeup:relay:queue"
STEP = 2.0


def arq_worker() -> Any:
    return SimpleNamespace(max_jobs=10, tasks={}, job_counter=0, allow_pick_jobs=True)


@pytest.fixture
def engine() -> Engine:
    """An engine that never connects (port 1), without hand-offs, whose claims answer "nothing"."""
    engine = Engine(ArqRedis(host="127.0.0.1", port=1), Settings(handoff=False), load(["worker.tasks.demo"]))

    async def claim_call(request: str, free: int, handoff: str | None = None) -> list[Any]:
        return NOTHING

    engine._claim_call = claim_call  # type: ignore[method-assign]
    return engine


def refuse_claims(engine: Engine) -> None:
    async def claim_call(request: str, free: int, handoff: str | None = None) -> list[Any]:
        raise OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")

    engine._claim_call = claim_call  # type: ignore[method-assign]


async def test_a_watch_whose_time_came_does_not_make_a_failed_poll_repeat_at_once(engine: Engine) -> None:
    engine.promises.add(CHANNEL, engine.redis_now_ms() - 1, "echo|default|0||")  # the claim at its time fails
    assert engine._sleep_seconds(STEP) == 0  # due: claim now
    refuse_claims(engine)
    await engine.poll(arq_worker())
    assert engine._sleep_seconds(STEP) == STEP
    engine.note_job()  # a notice still ends the wait at once
    assert engine.wake.is_set()


async def test_an_abort_notice_does_not_make_a_failed_abort_check_repeat_at_once(engine: Engine) -> None:
    engine.runs["running"] = cast(JobRun, SimpleNamespace())
    engine._abort_notices.add("running")
    assert engine._sleep_seconds(STEP) == 0  # an abort to act on: check at once

    async def refused() -> None:
        raise OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")

    engine._check_aborts = refused  # type: ignore[method-assign]
    await engine.poll(arq_worker())
    assert engine._sleep_seconds(STEP) == STEP
