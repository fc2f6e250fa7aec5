"""With several shards (``RELAY_QUEUE_SHARDS``), a worker asks a shard only when there is a reason to: a wake-up
notice from it, a job or lease of it due, or half an idle poll since it was last asked. So a notice costs one
claim, not one per shard, and an idle worker still asks every shard about once per poll."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.scripts import Scripts
from shared.settings import Settings
from worker.engine.engine import Engine
from worker.engine.run import JobRun
from worker.tasks import load

NOTHING = [[], [], None, None, None, [0, 0]]  # claim.lua's reply when nothing is queued or running


@pytest.fixture
def engine() -> Iterator[tuple[Engine, list[int]]]:
    """An engine on a queue of three shards whose claims answer "nothing", and the shards they asked."""
    with keys.layout("relay:polls", cluster=True, shards=3):
        engine = Engine(ArqRedis(host="127.0.0.1", port=1), Settings(), load(["worker.tasks.demo"]))  # never connects
        asked: list[int] = []

        async def claim_call(request: str, free: int, handoff: str | None = None) -> list[Any]:
            asked.append(keys.current_shard())
            return NOTHING

        engine._claim_call = claim_call  # type: ignore[method-assign]
        yield engine, asked


def arq_worker() -> Any:
    return SimpleNamespace(max_jobs=10, tasks={}, job_counter=0, allow_pick_jobs=True)


async def test_a_notice_asks_its_own_shard_only(engine: tuple[Engine, list[int]]) -> None:
    engine_, asked = engine
    await engine_._claim(arq_worker())
    assert sorted(asked) == [0, 1, 2]  # the first poll asks every shard
    asked.clear()
    await engine_._claim(arq_worker())
    assert asked == []  # nothing new, within half a poll: no shard is asked
    engine_.note_job(1)
    await engine_._claim(arq_worker())
    assert asked == [1]
    asked.clear()
    engine_.note_due(engine_.redis_now_ms() - 1, 2)  # a deferred job of shard 2 fell due
    await engine_._claim(arq_worker())
    assert asked == [2]
    asked.clear()
    engine_.catch_up(0)  # shard 0's wake-up channel came back after a loss
    await engine_._claim(arq_worker())
    assert asked == [0]


async def test_an_idle_poll_asks_every_shard(engine: tuple[Engine, list[int]]) -> None:
    engine_, asked = engine
    await engine_._claim(arq_worker())
    asked.clear()
    for poll in engine_._shard_polls.values():
        poll.asked -= engine_.settings.poll_delay_seconds / 2  # half an idle poll has passed
    await engine_._claim(arq_worker())
    assert sorted(asked) == [0, 1, 2]  # the safety net for a lost notice, as one shard has its poll


async def test_a_promise_is_passed_on_with_its_own_shards_schedule(engine: tuple[Engine, list[int]]) -> None:
    """A lane watched on shard 2 (shared/keys.py "Watched due times"): a worker busy at its time tells every worker
    through shard 2's schedule, whose slot its channel shares on a cluster (shard 0's would be another slot)."""
    engine_, _ = engine
    with keys.on_shard(2):
        channel, schedule = keys.wakeup_channel("relay:queue").encode(), keys.schedule("relay:queue")
    watched = [[], [], 60_000, None, None, [0, 0], 0, 0, [[channel, int(engine_.redis_now_ms()) - 1, b"echo|x"]]]
    told: list[str] = []

    async def claim_call(request: str, free: int, handoff: str | None = None) -> list[Any]:
        return watched if keys.current_shard() == 2 else NOTHING

    async def wake_all(keys: list[str], args: list[Any]) -> int:
        told.append(keys[0])
        return 1

    engine_._claim_call = claim_call  # type: ignore[method-assign]
    engine_.scripts = cast(Scripts, SimpleNamespace(wake_all=wake_all))
    engine_.settings.queue_name = "relay:queue"
    await engine_._claim(arq_worker())
    engine_.runs.update({f"busy-{n}": cast(JobRun, SimpleNamespace()) for n in range(10)})  # no slot free
    await engine_._keep_promises()
    assert told == [schedule]
