"""A notice naming one worker (``w<token>``, shared/keys.py "Named claims") wakes that worker alone: the others'
registrations stand, and a claim of theirs would take nothing. The lanes a worker's claims watch (shared/keys.py
"Watched due times") are promises too: the other workers do not wake for them."""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from shared import keys
from shared.redis import api_client, close
from shared.scripts import Scripts
from shared.settings import Settings
from worker.engine.engine import Engine
from worker.engine.run import JobRun
from worker.tasks import load
from worker.wakeup import WakeupListener


def idle_engine() -> Engine:
    """An idle engine that takes hand-offs, registered as of now (never connects)."""
    engine = Engine(ArqRedis(host="127.0.0.1", port=1), Settings(), load(["worker.tasks.demo"]))
    engine._registered_at = time.monotonic()
    return engine


def listener(engine: Engine) -> WakeupListener:
    return WakeupListener(Redis(host="127.0.0.1", port=1), "relay:queue", engine)


class ToldAll:
    """Stands in for the engine's scripts: records what ``wake_all`` tells every worker."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.queues: list[str] = []
        self.ended: list[list[Any]] = []  # the token and (lane, ms) watches each call ends
        self.sent = asyncio.Event()

    async def wake_all(self, keys: list[str], args: list[Any]) -> int:
        self.queues.append(keys[0])
        self.messages.append((args[0], args[1]))
        self.ended.append(args[2:])
        self.sent.set()
        return 1


def telling(engine: Engine) -> ToldAll:
    told = ToldAll()
    engine.scripts = cast(Scripts, told)
    return told


def test_a_notice_naming_this_worker_wakes_it_to_claim_and_register_again() -> None:
    engine = idle_engine()
    listener(engine).handle(b"w" + engine.token.encode())
    assert engine.wake.is_set()
    assert engine._registered_at is None  # the enqueue ended its registration: the claim renews it


def test_a_notice_naming_another_worker_leaves_this_one_asleep_and_registered() -> None:
    engine = idle_engine()
    registered_at = engine._registered_at
    listener(engine).handle(b"w" + b"other-host:1:0123abcd")
    assert not engine.wake.is_set()
    assert engine._registered_at == registered_at


def test_a_notice_to_all_still_wakes_every_idle_worker() -> None:
    engine = idle_engine()
    listener(engine).handle(b"j")
    assert engine.wake.is_set()
    assert engine._registered_at is None


async def test_a_named_worker_whose_slots_filled_passes_the_notice_on_to_all() -> None:
    """Hand-offs on their way when it was named can fill it: the job must not wait for its slot, or for a poll."""
    engine = idle_engine()
    for n in range(engine.settings.worker_concurrency):
        engine.runs[f"busy-{n}"] = cast(JobRun, SimpleNamespace())
    told = telling(engine)
    listener(engine).handle(b"w" + engine.token.encode(), channel=CHANNEL)
    await asyncio.wait_for(told.sent.wait(), 5)
    assert told.messages == [(CHANNEL, b"j")]


async def test_a_named_worker_that_is_stopping_passes_the_notice_on_to_all() -> None:
    engine = idle_engine()
    engine.shutting_down = True  # it left the registry a moment after the enqueue named it
    told = telling(engine)
    listener(engine).handle(b"w" + engine.token.encode(), channel=CHANNEL)
    await asyncio.wait_for(told.sent.wait(), 5)
    assert told.messages == [(CHANNEL, b"j")]


async def test_a_worker_named_for_a_job_due_now_that_stops_before_its_claim_passes_the_notice_on_to_all() -> None:
    """The notice went to this worker alone and ended its registration: a stop landing between the notice and
    the claim it asked for left the job to the other workers' polls (seconds), told to none of them."""
    engine = idle_engine()
    told = telling(engine)
    listener(engine).handle(b"w" + engine.token.encode(), channel=CHANNEL)
    assert engine.wake.is_set()  # free: it claims at once...
    engine.begin_stop(5.0)  # ... but the signal comes first
    await asyncio.wait_for(told.sent.wait(), 5)
    assert told.messages == [(CHANNEL, b"j")]


async def test_a_worker_named_for_a_job_due_now_that_claimed_it_tells_nobody() -> None:
    engine = idle_engine()
    told = telling(engine)
    listener(engine).handle(b"w" + engine.token.encode(), channel=CHANNEL)
    await engine._keep_promises()  # after the poll's claim, which took it (a slot is still free)
    assert told.messages == []
    assert engine.promises.next_ms() is None  # nothing left for a stop to pass on


# A job named for this worker that falls due later ('e<due>|<token>'): worker.engine.promises.

CHANNEL = b"relay:wakeup:relay:queue"


def fill(engine: Engine) -> None:
    for n in range(engine.settings.worker_concurrency):
        engine.runs[f"busy-{n}"] = cast(JobRun, SimpleNamespace())


def named_later(engine: Engine, due_ms: float) -> bytes:
    return b"e%d|%s" % (due_ms, engine.token.encode())


def test_a_job_named_for_later_wakes_this_worker_to_claim_and_keeps_the_promise() -> None:
    engine = idle_engine()
    due_ms = int(engine.redis_now_ms()) + 60_000
    listener(engine).handle(named_later(engine, due_ms), channel=CHANNEL)
    assert engine.wake.is_set()  # its registration ended: it claims now, and registers again
    assert engine._registered_at is None
    assert engine.promises.next_ms() == due_ms


def test_a_job_named_for_later_for_another_worker_is_no_concern_of_this_one() -> None:
    engine = idle_engine()
    listener(engine).handle(b"e%d|other-host:1:0123abcd" % (int(engine.redis_now_ms()) + 60_000), channel=CHANNEL)
    assert not engine.wake.is_set()
    assert engine.promises.next_ms() is None


def test_a_busy_worker_wakes_when_its_promised_job_falls_due() -> None:
    """It sleeps past due times while busy (a claim would take nothing), but not past a promised one: it must
    tell the others then."""
    engine = idle_engine()
    fill(engine)
    due_ms = int(engine.redis_now_ms()) + 500
    listener(engine).handle(named_later(engine, due_ms), channel=CHANNEL)
    assert engine._sleep_seconds(2.0) <= 0.5


async def test_a_worker_busy_when_its_promised_job_falls_due_tells_every_worker() -> None:
    engine = idle_engine()
    told = telling(engine)
    engine.promises.add(CHANNEL, engine.redis_now_ms() - 1)
    fill(engine)
    await engine._keep_promises()
    assert told.messages == [(CHANNEL, b"j")]
    assert told.queues == [keys.schedule(engine.settings.queue_name)]  # whose registrations wake_all ends
    await engine._keep_promises()
    assert told.messages == [(CHANNEL, b"j")]  # told once


async def test_a_worker_free_when_its_promised_job_falls_due_has_just_claimed_it() -> None:
    engine = idle_engine()
    told = telling(engine)
    engine.promises.add(CHANNEL, engine.redis_now_ms() - 1)
    await engine._keep_promises()  # after the poll's claim, which took everything due (a slot is still free)
    assert told.messages == []
    assert engine.promises.next_ms() is None


async def test_a_stopping_worker_tells_every_worker_when_its_promised_jobs_fall_due() -> None:
    engine = idle_engine()
    told = telling(engine)
    due_ms = int(engine.redis_now_ms()) + 60_000
    engine.promises.add(CHANNEL, due_ms)
    engine.begin_stop(5.0)
    await asyncio.wait_for(told.sent.wait(), 5)
    assert told.messages == [(CHANNEL, b"d%d" % due_ms)]


async def test_a_job_named_for_later_for_a_stopping_worker_is_passed_on() -> None:
    engine = idle_engine()
    engine.shutting_down = True
    told = telling(engine)
    due_ms = int(engine.redis_now_ms()) + 60_000
    listener(engine).handle(named_later(engine, due_ms), channel=CHANNEL)
    await asyncio.wait_for(told.sent.wait(), 5)
    assert told.messages == [(CHANNEL, b"d%d" % due_ms)]


# The lanes this worker's claims watch (shared/keys.py "Watched due times"): claim.lua's ``watching``.

LANE = "echo|default|0||"


def watching_claim(engine: Engine, watching: list[list[Any]]) -> None:
    """The engine's claims answer that nothing is due and that it watches ``watching`` ({channel, ms, lane})."""

    async def claim_call(request: str, free: int, handoff: str | None = None) -> list[Any]:
        return [[], [], 60_000, None, None, [0, 0], 0, 0, watching]

    engine._claim_call = claim_call  # type: ignore[method-assign]


def arq_worker() -> Any:
    return SimpleNamespace(max_jobs=10, tasks={}, job_counter=0, allow_pick_jobs=True)


def test_every_time_promised_on_a_channel_is_kept() -> None:
    """A worker may watch several lanes of one channel: the later watch is kept past the earlier's time. Keeping
    only the earliest, a worker busy at the later time told nobody, and no other worker woke for it."""
    engine = idle_engine()
    now_ms = engine.redis_now_ms()
    engine.promises.add(CHANNEL, now_ms + 100, LANE)
    engine.promises.add(CHANNEL, now_ms + 200, "other|default|0||")
    assert engine.promises.take_due(now_ms + 150) == [CHANNEL]
    assert engine.promises.next_ms() == now_ms + 200


async def test_the_lanes_a_claim_watches_are_kept_as_promises() -> None:
    engine = idle_engine()
    due_ms = int(engine.redis_now_ms()) + 60_000
    watching_claim(engine, [[CHANNEL, due_ms, LANE.encode()]])
    await engine._claim(arq_worker())
    assert engine.promises.next_ms() == due_ms
    fill(engine)
    assert engine._sleep_seconds(120.0) <= 60.0  # busy, it still wakes then: to tell the others


async def test_a_stopping_worker_ends_its_watches_as_it_tells_every_worker() -> None:
    """So the claims the notice sets off watch those lanes; left standing, each would have kept the others from
    watching its lane until its time, with nobody to claim then."""
    engine = idle_engine()
    told = telling(engine)
    now_ms = int(engine.redis_now_ms())
    watching_claim(engine, [[CHANNEL, now_ms + 60_000, LANE.encode()], [CHANNEL, now_ms + 90_000, b"b|default|0||"]])
    await engine._claim(arq_worker())
    engine.begin_stop(5.0)
    await asyncio.wait_for(told.sent.wait(), 5)
    assert told.messages == [(CHANNEL, b"d%d" % (now_ms + 60_000))]
    token, *watches = told.ended[0]
    assert token == engine.token
    assert sorted(zip(watches[::2], watches[1::2], strict=True)) == [
        ("b|default|0||", now_ms + 90_000),
        (LANE, now_ms + 60_000),
    ]


@pytest.mark.cluster
async def test_a_notice_passed_on_goes_out_on_its_own_shard(redis_cluster_url: str) -> None:
    """With several shards, a worker named for a job of shard 2 that it cannot take tells every worker on shard 2's
    channel, ending shard 2's registrations: run on shard 0's schedule, the publish was refused (a key of another
    slot) and swallowed, so nobody was told and the stale registrations stayed."""
    with keys.layout_kept():
        namespace = f"relay:pass-on:{uuid.uuid4().hex[:6]}"
        settings = Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=namespace, queue_shards=3)
        pool, listening = api_client(settings), api_client(settings)
        try:
            shard = 2
            with keys.on_shard(shard):
                channel, idle = keys.wakeup_channel(namespace), keys.idle_registry(namespace)
                await pool.hset(idle, "another-worker", "9999999999999|1|1||")  # type: ignore[misc]
                sub = listening.pubsub()
            await sub.subscribe(channel)
            assert (await sub.get_message(timeout=5))["type"] == "subscribe"
            engine = SimpleNamespace(token="me", shutting_down=False, can_claim=False, settings=settings)
            engine.scripts = Scripts(pool)
            heard = WakeupListener(pool, namespace, cast(Engine, engine))
            heard.handle(b"wme", shard, channel.encode())  # named for this worker, which cannot take it
            await asyncio.gather(*heard._passing_on)
            message = await sub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None, "the notice passed on never reached shard 2's channel"
            assert message["data"] == b"j"
            with keys.on_shard(shard):
                assert await pool.hlen(idle) == 0  # type: ignore[misc]
            await sub.aclose()
        finally:
            await close(pool)
            await close(listening)
