"""Watched due times (``shared/keys.py`` "Watched due times"), script by script against a real Redis: one worker
watches a lane's next due time and claims as it comes; the other workers' claims leave that lane to it, and an
enqueue of a later job of the lane tells nobody. A watch counts only until its time, and a stopping watcher ends
its watches. The end-to-end count, with real worker processes, is in tests/e2e/test_wakeup.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.scripts import Scripts
from shared.settings import Settings
from tests.support.claims import Submitter, Worker, next_notice

LANE = "stamp|default|0||"  # the lane of a plain ``stamp`` job (shared/lanes.py)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:dw:{uuid.uuid4().hex[:8]}")


async def redis_ms(pool: ArqRedis) -> int:
    seconds, micros = await pool.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def wakes(worker: Worker, limit: int = 10) -> tuple[float | None, list[tuple[bytes, int, bytes]]]:
    """What a claim of ``worker`` says: in how many ms it wakes for a job, and the lanes it watches."""
    reply: list[Any] = await worker.claim_raw(limit)
    next_due = None if reply[2] is None else float(reply[2])
    return next_due, [(channel, int(at), lane) for channel, at, lane in reply[8]]


async def subscribed(pubsub: Any) -> None:
    """Wait for the subscription's confirmation: a notice published after it cannot be missed (so a test that
    expects none can fail)."""
    confirmation = await pubsub.get_message(timeout=5)
    assert confirmation is not None
    assert confirmation["type"] == "subscribe"


async def watch_of(pool: ArqRedis, settings: Settings) -> bytes | None:
    value: bytes | None = await pool.get(keys.due_watch(settings.queue_name, LANE))
    return value


async def test_one_worker_watches_a_later_job_and_the_others_sleep_past_it(pool: ArqRedis, settings: Settings) -> None:
    """No worker is registered, so the enqueue tells all ('d'); the first claim watches the lane, and the second
    worker's claim leaves it to that one. Before, every worker woke as the job fell due, all but one for nothing."""
    first, second = Worker(pool, settings, handoffs=False), Worker(pool, settings, handoffs=False)
    await Submitter(pool, settings).submit("stamp", delay_seconds=60)
    next_due, watching = await wakes(first)
    assert next_due is not None
    assert 59_000 < next_due <= 60_000
    [(channel, at, lane)] = watching
    assert (channel, lane) == (keys.wakeup_channel(settings.queue_name).encode(), LANE.encode())
    assert await watch_of(pool, settings) == f"{at}|{first.token}".encode()
    assert await wakes(second) == (None, [])  # it polls; the watcher claims for the job
    again, watching_again = await wakes(first)  # its claims keep the watch
    assert again is not None
    assert again <= next_due
    assert watching_again == watching


async def test_a_worker_that_takes_from_a_lane_watches_its_next_head(pool: ArqRedis, settings: Settings) -> None:
    """The claim that takes a lane's due jobs moves its marker to the next head, and watches it: left unwatched, the
    next claim of any worker took the watch while this one still woke for it, and both claimed at every due time."""
    taker, other = Worker(pool, settings, handoffs=False), Worker(pool, settings, handoffs=False)
    submitter = Submitter(pool, settings)
    now_job = await submitter.submit("stamp")
    await submitter.submit("stamp", delay_seconds=60)
    reply = await taker.claim_raw(10)
    assert [item[0].decode() for item in reply[0]] == [now_job]
    assert 59_000 < float(reply[2]) <= 60_000
    assert len(reply[8]) == 1
    assert await wakes(other) == (None, [])


async def test_a_worker_with_no_slot_left_watches_nothing(pool: ArqRedis, settings: Settings) -> None:
    """It could not take the job when it falls due: its claims leave the lane to a worker with a free slot."""
    busy, free = Worker(pool, settings, handoffs=False), Worker(pool, settings, handoffs=False)
    await Submitter(pool, settings).submit("stamp", delay_seconds=60)
    next_due, watching = await wakes(busy, limit=0)
    assert next_due is not None
    assert watching == []
    assert (await wakes(free))[1] != []


async def test_a_later_job_of_a_watched_lane_is_told_to_nobody(pool: ArqRedis, settings: Settings) -> None:
    """Its watcher claims before it falls due, and watches the lane's next head then. Before, the enqueue named a
    registered worker for it ('e<due>|<token>', ending that worker's registration), which claimed at once and
    again as the job fell due."""
    watcher, other = Worker(pool, settings), Worker(pool, settings)
    await watcher.claim(10)
    await other.claim(5)
    submitter = Submitter(pool, settings)
    await submitter.submit("stamp", delay_seconds=30)  # named for the watcher (the most free slots)
    await watcher.claim(10)  # at once, as on its notice: registers again, and watches the lane
    assert (await watch_of(pool, settings) or b"").endswith(watcher.token.encode())
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    await subscribed(pubsub)
    await submitter.submit("stamp", delay_seconds=60)
    assert await next_notice(pubsub, 0.2) is None
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await watcher.registration() is not None  # a named notice would have ended its registration
    assert await other.registration() is not None


async def test_an_earlier_job_than_the_watch_is_told(pool: ArqRedis, settings: Settings) -> None:
    """A watch says its worker claims at its time: a job due before that is not covered by it."""
    watcher = Worker(pool, settings, handoffs=False)
    submitter = Submitter(pool, settings)
    await submitter.submit("stamp", delay_seconds=60)
    await wakes(watcher)
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    await subscribed(pubsub)
    await submitter.submit("stamp", delay_seconds=30)
    notice = await next_notice(pubsub, 5)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert notice is not None
    assert notice.startswith(b"d")
    now = await redis_ms(pool)
    assert 29_000 < int(notice[1:]) - now <= 30_000
    next_due, watching = await wakes(watcher)  # it watches the earlier head now
    assert next_due is not None
    assert next_due <= 30_000
    assert len(watching) == 1


async def test_a_watch_counts_only_until_its_time(pool: ArqRedis, settings: Settings) -> None:
    """At its time the watcher claims; one that did not (busy, or gone) leaves the lane to the next claim of any
    worker, which then watches the lane's next head: the job after is not left to a watcher that never came."""
    watcher, other = Worker(pool, settings, handoffs=False), Worker(pool, settings, handoffs=False)
    submitter = Submitter(pool, settings)
    soon = await submitter.submit("stamp", delay_seconds=0.3)
    await submitter.submit("stamp", delay_seconds=60)
    _, [(_, at, _)] = await wakes(watcher)
    while await redis_ms(pool) <= at:  # its time passes without its claim (a poll with a deadline: 0.3 s away)
        pass
    taken, _, _ = await other.claim(1)
    assert taken == [soon]
    next_due, watching = await wakes(other)
    assert next_due is not None
    assert 59_000 < next_due <= 60_000
    assert len(watching) == 1
    assert (await wakes(watcher))[1] == []  # the other watches it now


async def test_a_watcher_that_fills_its_slots_still_watches_the_lanes_next_head(
    pool: ArqRedis, settings: Settings
) -> None:
    """Its claim takes the lane's due job with its last slot: it keeps watching (at the next head's time it claims
    if a slot freed, or tells every worker). Left unwatched, the lane waited for the other workers' polls: they had
    not woken for it."""
    watcher, other = Worker(pool, settings, handoffs=False), Worker(pool, settings, handoffs=False)
    submitter = Submitter(pool, settings)
    soon = await submitter.submit("stamp", delay_seconds=0.3)
    await submitter.submit("stamp", delay_seconds=60)
    _, [(_, at, _)] = await wakes(watcher)
    while await redis_ms(pool) <= at:  # its time comes (a poll with a deadline: 0.3 s away)
        pass
    reply = await watcher.claim_raw(1)
    assert [item[0].decode() for item in reply[0]] == [soon]
    assert len(reply[8]) == 1
    assert await wakes(other) == (None, [])


async def test_a_replayed_claim_returns_the_watches_its_first_run_wrote(pool: ArqRedis, settings: Settings) -> None:
    """A worker that never got a claim's reply (stopping, it sends it again to hand the jobs back) learns of the
    watches that run wrote, so it can end them; before, a replay answered none, and the watch named a worker gone."""
    watcher = Worker(pool, settings, handoffs=False)
    submitter = Submitter(pool, settings)
    await submitter.submit("stamp")
    await submitter.submit("stamp", delay_seconds=60)  # the next head, watched by the claim that takes the first
    first = await watcher.claim_raw(10)
    assert len(first[0]) == 1
    assert len(first[8]) == 1
    watcher.requests -= 1  # the same request id again
    replay = await watcher.claim_raw(0)
    assert [item[0] for item in replay[0]] == [item[0] for item in first[0]]  # its batch, and no more
    assert replay[8] == first[8]


async def test_a_stopping_watcher_ends_its_watches(pool: ArqRedis, settings: Settings) -> None:
    """wake_all.lua as a stopping worker calls it (worker.engine.promises): its watches end, so the claims its
    notice sets off watch the lanes instead; safe to apply twice, and a watch since renewed for another time
    stays."""
    watcher, other = Worker(pool, settings, handoffs=False), Worker(pool, settings, handoffs=False)
    await Submitter(pool, settings).submit("stamp", delay_seconds=60)
    _, [(channel, at, lane)] = await wakes(watcher)
    stale = [channel, f"d{at}", watcher.token, lane, at - 1]
    await Scripts(pool).wake_all(keys=[settings.queue_name], args=stale)
    assert await watch_of(pool, settings) is not None
    for _ in range(2):
        await Scripts(pool).wake_all(keys=[settings.queue_name], args=[channel, f"d{at}", watcher.token, lane, at])
        assert await watch_of(pool, settings) is None
    assert len((await wakes(other))[1]) == 1


async def test_a_worker_named_as_it_stops_leaves_the_lane_to_the_others(pool: ArqRedis, settings: Settings) -> None:
    """It passes the job on ('d<due>', worker/wakeup.py) without claiming: the claims that sets off watch the lane.
    Had the enqueue written a watch for it, they would have left the lane to a worker that is gone."""
    stopping, other = Worker(pool, settings), Worker(pool, settings)
    await stopping.claim(10)
    await other.claim(5)
    channel = keys.wakeup_channel(settings.queue_name)
    pubsub = pool.pubsub()
    await pubsub.subscribe(channel)
    await subscribed(pubsub)
    await Submitter(pool, settings).submit("stamp", delay_seconds=60)
    notice = await next_notice(pubsub, 5)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert notice is not None
    due, _, token = notice[1:].partition(b"|")
    assert token == stopping.token.encode()
    await Scripts(pool).wake_all(keys=[settings.queue_name], args=[channel, b"d" + due])  # its pass-on
    assert len((await wakes(other))[1]) == 1
