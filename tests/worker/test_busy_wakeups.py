"""A wake-up notice reaches every worker of its queue; only a worker with a free slot claims on it. One with none
claims as a slot frees instead: with every worker busy and a backlog arriving, claiming on each notice cost one
claim per worker per submit, each taking nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from arq.connections import ArqRedis

from shared.settings import Settings
from worker.engine.engine import Engine
from worker.engine.run import JobRun
from worker.tasks import load

NOTHING = [[], [], None, None, None, [0, 0]]  # claim.lua's reply when nothing is queued or running


@pytest.fixture
def engine() -> Engine:
    """A one-slot engine whose claims answer "nothing", its slot taken by a running job. Without hand-offs: a
    worker that takes them also claims as its slot frees, to register again."""
    settings = Settings(worker_concurrency=1, handoff=False)
    engine = Engine(ArqRedis(host="127.0.0.1", port=1), settings, load(["worker.tasks.demo"]))  # never connects

    async def claim_call(request: str, free: int, handoff: str | None = None) -> list[Any]:
        return NOTHING

    engine._claim_call = claim_call  # type: ignore[method-assign]
    engine.runs["busy"] = cast(JobRun, SimpleNamespace())
    return engine


def arq_worker() -> Any:
    return SimpleNamespace(max_jobs=1, tasks={}, job_counter=1, allow_pick_jobs=True)


def test_a_busy_worker_claims_for_a_notice_once_its_slot_frees(engine: Engine) -> None:
    engine.note_job()
    assert not engine.wake.is_set()  # no free slot: a claim now would take nothing
    engine._finished(arq_worker(), "busy")
    assert engine.wake.is_set()  # the freed slot claims at once, for the job the notice announced


def test_a_busy_worker_waits_out_a_deferred_notice_too(engine: Engine) -> None:
    engine.note_due(engine.redis_now_ms() - 1)
    assert not engine.wake.is_set()
    engine._finished(arq_worker(), "busy")
    assert engine.wake.is_set()


async def test_a_claim_made_since_answers_the_notice(engine: Engine) -> None:
    engine.note_job()
    await engine._claim(arq_worker())  # looked at everything queued, as of after the notice
    engine.wake.clear()  # as the poll's timer does each iteration
    engine._finished(arq_worker(), "busy")
    assert not engine.wake.is_set()  # nothing new was announced since: the slot waits for a notice or its poll


def test_a_worker_with_a_free_slot_claims_at_once(engine: Engine) -> None:
    engine.runs.clear()
    engine.note_job()
    assert engine.wake.is_set()


async def test_a_slot_freeing_before_a_known_due_time_wakes_the_worker_at_that_time(engine: Engine) -> None:
    """Busy, the worker sleeps past due times (a claim would take nothing): a slot freeing after that sleep began
    ended it only at the poll's end (2 s by default), however soon the job fell due. Without hand-offs (as with
    RELAY_QUEUE_SHARDS above 1) nothing else wakes it: a busy worker writes no watch, so no other may be told."""
    engine._next_due_ms = engine.redis_now_ms() + 300  # the last claim said: a job falls due in 300 ms
    engine._finished(arq_worker(), "busy")
    assert not engine.wake.is_set()  # no claim before its time: it would take nothing
    await asyncio.wait_for(engine.wake.wait(), 1.5)  # then one, well before the 2 s poll
