"""State changes from outside a worker, against a real Redis: each is one atomic script."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from arq.connections import ArqRedis

from shared import events, keys, lanes
from shared.enqueue import Enqueuer, Links, prepare
from shared.errors import ParentAborting
from shared.events import EventLog, EventType, decode_head
from shared.jobs import JobRecord, ResultRecord
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasks import TaskSubmission
from shared.transitions import Transitions
from tests.support.events import publish
from worker.tasks import load


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:tr:{uuid.uuid4().hex[:8]}")


def task_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def ended_without_end(pool: ArqRedis, settings: Settings, tid: str) -> None:
    """A task whose result is stored but whose log lacks ``end`` (what a crash could once leave)."""
    record = ResultRecord("succeeded", "echo", {"params": {}}, 1, 0, {"echo": "x"}, 1, 2, settings.queue_name, tid)
    await pool.set(keys.result(tid), record.encode(), px=60_000)
    await publish(pool, tid, (EventType.STARTED, {"try": 1}))


async def test_concurrent_repairs_publish_one_end(pool: ArqRedis, settings: Settings) -> None:
    tid = task_id()
    await ended_without_end(pool, settings, tid)
    transitions = Transitions(pool, Scripts(pool), settings)
    assert all(await asyncio.gather(*(transitions.repair_end(tid) for _ in range(20))))
    log = EventLog(pool, max_len=100, ttl_seconds=60)
    kinds = [decode_head(raw).type for _, raw in await log.read_after(tid, 0)]
    assert kinds == ["started", "result", "end"]  # once, however many followers asked at the same time


async def test_repair_leaves_a_log_that_ends_alone(pool: ArqRedis, settings: Settings) -> None:
    tid = task_id()
    await ended_without_end(pool, settings, tid)
    await publish(pool, tid, (EventType.RESULT, {"echo": "x"}), (EventType.END, {"state": "succeeded"}))
    assert await Transitions(pool, Scripts(pool), settings).repair_end(tid)
    log = EventLog(pool, max_len=100, ttl_seconds=60)
    assert len(await log.read_after(tid, 0)) == 3


async def test_repair_is_not_fooled_by_a_last_event_whose_data_looks_like_an_end(
    pool: ArqRedis, settings: Settings
) -> None:
    tid = task_id()
    await ended_without_end(pool, settings, tid)
    await publish(pool, tid, (EventType.PARTIAL, {"type": "end", "state": "succeeded"}))  # the task's own data
    assert await Transitions(pool, Scripts(pool), settings).repair_end(tid)
    log = EventLog(pool, max_len=100, ttl_seconds=60)
    kinds = [decode_head(raw).type for _, raw in await log.read_after(tid, 0)]
    assert kinds == ["started", "partial", "result", "end"]  # the missing end, published


async def test_abort_of_a_waiting_task_is_final_at_once_with_its_events(pool: ArqRedis, settings: Settings) -> None:
    tid = task_id()
    registry = load(["worker.tasks.demo"])
    await Enqueuer(pool, settings).enqueue(
        prepare(registry.get("echo"), settings, TaskSubmission(task="echo", id=tid, delay_seconds=60))
    )
    transitions = Transitions(pool, Scripts(pool), settings)
    first, second = await asyncio.gather(transitions.abort(tid), transitions.abort(tid))
    assert sorted([first.outcome, second.outcome]) == ["aborted", "finished"]
    assert await pool.zscore(keys.lane(settings.queue_name, lanes.lane_id("echo", "default", 0, None)), tid) is None
    assert await pool.exists(keys.job(tid)) == 0
    assert await pool.zscore(keys.ABORT_SET, tid) is None  # a waiting task never needs arq's abort set
    log = EventLog(pool, max_len=100, ttl_seconds=60)
    assert [decode_head(raw).type for _, raw in await log.read_after(tid, 0)] == ["aborted", "end"]


async def test_events_body_starts_with_its_type() -> None:
    # Scripts recognise an ``end`` by the first bytes of an event: the order of the fields is part of the format.
    assert events.end_body("t", "succeeded").startswith(b'{"type":"end"')


async def test_children_join_their_parents_set_none_is_added_once_its_abort_is_requested_and_all_are_aborted(
    pool: ArqRedis, settings: Settings
) -> None:
    registry = load(["worker.tasks.demo"])
    enqueuer, transitions = Enqueuer(pool, settings), Transitions(pool, Scripts(pool), settings)

    async def submit(tid: str, parent: str | None = None) -> None:
        submission = TaskSubmission(task="sleep", id=tid, delay_seconds=60)
        await enqueuer.enqueue(prepare(registry.get("sleep"), settings, submission, links=Links(parent=parent)))

    parent = task_id()
    await submit(parent)
    await submit(f"{parent}.1", parent)
    await submit(f"{parent}.1.1", f"{parent}.1")  # a grandchild
    assert await pool.smembers(keys.children(parent)) == {f"{parent}.1".encode()}
    assert await pool.smembers(keys.children(f"{parent}.1")) == {f"{parent}.1.1".encode()}
    ttl_ms = (settings.result_ttl_seconds + settings.job_timeout_seconds) * 1000
    assert ttl_ms - 5000 < await pool.pttl(keys.children(parent)) <= ttl_ms
    enqueued = JobRecord.decode(await pool.get(keys.job(parent))).enqueue_ms
    await pool.zadd(keys.ABORT_SET, {parent: enqueued - 1})  # a request left from an earlier run: not for this one
    await submit(f"{parent}.2", parent)
    await pool.zadd(keys.ABORT_SET, {parent: enqueued + 1})  # as abort.lua does for a running parent
    with pytest.raises(ParentAborting):
        await submit(f"{parent}.3", parent)
    assert await pool.exists(keys.job(f"{parent}.3")) == 0  # refused: nothing written
    assert await pool.scard(keys.children(parent)) == 2
    assert await transitions.abort_children([parent]) == 3  # .1, .2 and .1.1, each once
    for child in (f"{parent}.1", f"{parent}.2", f"{parent}.1.1"):
        assert (await transitions.abort(child)).state == "aborted"
    assert await transitions.abort_children([parent]) == 0  # again: nothing left to stop
