"""One enqueue call for many submits (``shared/lua/enqueue.lua``; concurrent submits of an API process share one),
against a real Redis: each item is answered as a call of its own would answer it, with the call's reads shared
(the id checks of up to four items in one MGET, a lane's marker read once for its hand-offs)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from arq.connections import ArqRedis

from shared.enqueue import Enqueuer, Prepared, Submitted, prepare
from shared.errors import IdConflict, QueueFull
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasks import TaskState, TaskSubmission
from tests.support.claims import TASKS, Worker


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:eb:{uuid.uuid4().hex[:8]}")


class Calls:
    """Commands Redis ran between ``start`` and ``count`` (INFO commandstats)."""

    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool
        self.before: dict[str, Any] = {}

    async def start(self) -> None:
        self.before = await self.pool.info("commandstats")

    async def count(self, command: str) -> int:
        after = await self.pool.info("commandstats")
        key = f"cmdstat_{command}"
        return int(after.get(key, {}).get("calls", 0)) - int(self.before.get(key, {}).get("calls", 0))


def stamp(settings: Settings, **fields: Any) -> Prepared:
    return prepare(TASKS.get("stamp"), settings, TaskSubmission(task="stamp", **fields))


async def test_concurrent_submits_sharing_an_enqueue_call_read_their_ids_and_lane_once(
    pool: ArqRedis, settings: Settings
) -> None:
    """The id checks of one call are one MGET, and its hand-offs of one lane read the lane's marker once."""
    enqueuer = Enqueuer(pool, settings, Scripts(pool))

    async def submit(**fields: Any) -> str:
        prepared = prepare(TASKS.get("stamp"), settings, TaskSubmission(task="stamp", **fields))
        return (await enqueuer.enqueue(prepared)).task_id

    await submit(delay_seconds=3600)  # the script loaded: no NOSCRIPT retry counted below
    worker = Worker(pool, settings)
    await worker.claim(3)
    before = await pool.info("commandstats")
    ids = await asyncio.gather(*(submit() for _ in range(3)))
    after = await pool.info("commandstats")

    def calls(command: str) -> int:
        return int(after.get(f"cmdstat_{command}", {}).get("calls", 0)) - int(
            before.get(f"cmdstat_{command}", {}).get("calls", 0)
        )

    assert calls("evalsha") == 1  # one enqueue call for the three
    assert [(await worker.pop() or [None])[0] for _ in ids] == list(ids)  # all three handed, in submit order
    assert calls("mget") == 1
    assert calls("zscore") == 1


async def test_a_call_of_many_items_answers_each_as_its_own_call_would(pool: ArqRedis, settings: Settings) -> None:
    enqueuer = Enqueuer(pool, settings, Scripts(pool))
    same = await enqueuer.enqueue(stamp(settings, id="kept", args=[1], delay_seconds=600))
    await enqueuer.enqueue(stamp(settings, id="taken", args=[1], delay_seconds=600))
    fresh = [stamp(settings, delay_seconds=600) for _ in range(6)]
    batch = [
        fresh[0],
        stamp(settings, id="kept", args=[1], delay_seconds=600),  # the same task again
        fresh[1],
        stamp(settings, id="taken", args=[2], delay_seconds=600),  # another task under a taken id
        *fresh[2:4],
        stamp(settings, id=fresh[0].task_id, delay_seconds=600),  # a repeat within the call
        *fresh[4:],
    ]
    calls = Calls(pool)
    await calls.start()
    outcomes = await enqueuer._flush_shard(batch)  # one call, as batched
    assert await calls.count("mget") == 2  # the id checks of eight distinct ids, four at a time
    created = [o for o in outcomes if isinstance(o, Submitted) and o.created]
    assert [o.task_id for o in created] == [p.task_id for p in fresh]
    assert outcomes[1] == Submitted(same.task_id, "stamp", False, same.state)
    assert isinstance(outcomes[3], IdConflict)
    assert outcomes[6] == Submitted(fresh[0].task_id, "stamp", False, TaskState.DEFERRED)  # as the first created it


async def test_an_id_refused_in_a_call_is_checked_again_when_it_comes_again(pool: ArqRedis, settings: Settings) -> None:
    """A refused item leaves no answer for its id in the call (found by review of the shared id checks: its check
    was used up, and the id's next item failed the script)."""
    full = settings.model_copy(update={"max_queue_depth": 1})
    enqueuer = Enqueuer(pool, full, Scripts(pool))
    await enqueuer.enqueue(stamp(full, delay_seconds=600))  # the queue is full
    again = [stamp(full, id="twice"), stamp(full, id="twice")]
    outcomes = await enqueuer._flush_shard(again)
    assert [type(o) for o in outcomes] == [QueueFull, QueueFull]
