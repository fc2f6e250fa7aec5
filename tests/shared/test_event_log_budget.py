"""A task's event log keeps at most ``RELAY_EVENT_LOG_MAX_BYTES`` of events (``relay_trim`` in
``shared/lua/lib.lua``), against a real redis-server: the oldest entries go, never the newest; the byte count
stays exact next to the count cap; a commit batch sent twice changes nothing the second time; a log of one
entry (most tasks') keeps no count."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis

from shared import events, keys
from shared.events import EventType
from shared.scripts import Scripts
from tests.support.events import publish


def task_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def stored(pool: ArqRedis, tid: str) -> list[int]:
    """The sizes of the log's entries, oldest first."""
    return [len(fields[b"e"]) for _, fields in await pool.xrange(keys.events_stream(tid))]


async def counted(pool: ArqRedis, tid: str) -> int:
    return int(await pool.get(keys.event_bytes(tid)) or 0)


async def test_the_oldest_entries_go_once_the_log_is_over_its_bytes(pool: ArqRedis) -> None:
    tid = task_id()
    for i in range(50):
        await publish(pool, tid, (EventType.PARTIAL, {"i": i, "pad": "x" * 100}), max_bytes=2048)
    sizes = await stored(pool, tid)
    assert sum(sizes) <= 2048 < sum(sizes) + 200  # as much as fits
    assert await counted(pool, tid) == sum(sizes)
    first = await pool.xrange(keys.events_stream(tid), count=1)
    assert first[0][0] == f"0-{50 - len(sizes) + 1}".encode()  # the newest are kept


async def test_the_newest_entry_stays_even_when_it_alone_is_over_the_budget(pool: ArqRedis) -> None:
    tid = task_id()
    await publish(pool, tid, (EventType.PARTIAL, "small"), max_bytes=1024)
    await publish(pool, tid, (EventType.RESULT, "x" * 4000), max_bytes=1024)
    sizes = await stored(pool, tid)
    assert len(sizes) == 1
    assert sizes[0] > 4000
    assert await pool.exists(keys.event_bytes(tid)) == 0  # one entry left: no count to keep


async def test_the_count_cap_and_the_byte_count_stay_in_step(pool: ArqRedis) -> None:
    tid = task_id()
    for i in range(30):
        await publish(pool, tid, (EventType.PROGRESS, {"current": i}), max_len=10, max_bytes=1_000_000)
    sizes = await stored(pool, tid)
    assert len(sizes) == 10  # exact: entries the cap drops are taken off the byte count too
    assert await counted(pool, tid) == sum(sizes)


async def test_a_log_started_again_counts_from_its_first_entry(pool: ArqRedis) -> None:
    tid = task_id()
    for _ in range(3):
        await publish(pool, tid, (EventType.PARTIAL, "x" * 500))
    await pool.delete(keys.events_stream(tid))  # deleted by hand; its count was left behind
    await publish(pool, tid, (EventType.PARTIAL, "y"))
    await publish(pool, tid, (EventType.PARTIAL, "z"))
    assert await counted(pool, tid) == sum(await stored(pool, tid))


async def test_a_log_of_one_entry_keeps_no_count(pool: ArqRedis) -> None:
    """Most tasks' whole log is one entry (started, result and end in one commit): no key is spent on it."""
    tid = task_id()
    await publish(pool, tid, (EventType.STARTED, {}), (EventType.RESULT, 1), (EventType.END, {}))
    assert await pool.exists(keys.event_bytes(tid)) == 0


async def test_a_log_from_before_the_count_is_counted_once(pool: ArqRedis) -> None:
    tid = task_id()
    for i in range(5):
        await publish(pool, tid, (EventType.PARTIAL, i))
    await pool.delete(keys.event_bytes(tid))  # as a log written by an older version has none
    await publish(pool, tid, (EventType.PARTIAL, 5))
    assert await counted(pool, tid) == sum(await stored(pool, tid))


async def test_a_commit_batch_sent_twice_is_counted_once(pool: ArqRedis) -> None:
    tid, token, queue = task_id(), "tok", f"relay:budget:{uuid.uuid4().hex[:8]}"
    await pool.set(keys.in_progress(tid), f"{token}|1")
    scripts = Scripts(pool)
    bodies = [events.body(tid, EventType.PARTIAL, "x" * 600) for _ in range(3)]  # about 2 KB per entry
    # now_ms, the log's caps (entries, bytes), ttl_ms, wake-up channel; then two ops of three events each.
    args: list[object] = [1, 10_000, 5000, 60_000, keys.wakeup_channel(queue)]
    for seq_before in (0, 3):
        args += ["E", tid, token, seq_before, len(bodies), *bodies, "", ""]  # no link (no workflow), no inbox
    first = await scripts.commit(keys=[queue, keys.ABORT_SET, keys.reply_outbox(queue)], args=args)
    after_first = (await stored(pool, tid), await counted(pool, tid))
    again = await scripts.commit(keys=[queue, keys.ABORT_SET, keys.reply_outbox(queue)], args=args)
    assert [status for status, _ in first] == [b"ok", b"ok"]
    assert [status for status, _ in again] == [b"dup", b"dup"]
    assert (await stored(pool, tid), await counted(pool, tid)) == after_first
    assert len(after_first[0]) == 2  # both entries fit the 5000 bytes...
    assert after_first[1] == sum(after_first[0])  # ...and are counted once, however often the batch comes
