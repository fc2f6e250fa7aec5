"""Hand-offs (``shared/keys.py`` "Hand-off"), script by script against a real Redis: an idle worker's claim
registers it; an enqueue due now hands its job straight to it, claimed there; nothing waiting is overtaken, no slot
is promised twice, and a handed job its worker never took goes back to its lane with its pickup given back. The
end-to-end behaviour, with real worker processes and signals, is in tests/e2e/test_handoff.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from arq.connections import ArqRedis

import shared
from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.errors import QueueFull
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasks import TaskSubmission
from tests.support.claims import REGISTRATION_MS, TASKS, Submitter, Worker, next_notice


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:ho:{uuid.uuid4().hex[:8]}")


async def lapse_one_ms_leases(pool: ArqRedis) -> None:
    seconds, _ = await pool.time()
    while (await pool.time())[0] == seconds:  # a 1 ms lease has surely lapsed within the next second
        pass


async def waiting_in_lanes(pool: ArqRedis, settings: Settings) -> int:
    depth = await pool.hget(keys.depth(settings.queue_name), "default")  # type: ignore[misc]
    return int(depth or 0)


async def test_an_idle_workers_claim_registers_it_on_redis_time(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    assert await worker.claim(10) == ([], [], 10)
    registration = await worker.registration()
    assert registration is not None
    until, free, lease, queues, tasks = registration
    seconds, micros = await pool.time()
    redis_now = seconds * 1000 + micros // 1000
    assert redis_now < int(until) <= redis_now + REGISTRATION_MS  # from Redis's clock, not the caller's
    assert (free, lease, queues) == ("10", "10000", ",default,")
    assert ",stamp," in tasks
    assert ",echo," in tasks
    # Limited tasks are listed marked, for named claims only: an enqueue looking for ',<task>,' never hands them off.
    assert ",!per_customer," in tasks
    assert ",!five_per_second," in tasks
    assert ",per_customer," not in tasks


async def test_a_job_due_now_is_handed_to_the_idle_worker_claimed_and_without_a_notice(
    pool: ArqRedis, settings: Settings
) -> None:
    worker = Worker(pool, settings)
    await worker.claim(10)
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    task_id = await Submitter(pool, settings).submit("stamp")
    item = await worker.pop()
    assert item is not None
    assert item[0] == task_id
    assert item[2] == 1
    assert item[3] == 0
    assert json.loads(item[1])["f"] == "stamp"  # the job record itself
    marker = await pool.get(keys.in_progress(task_id))
    assert marker is not None
    assert marker.decode().startswith(worker.token + "|1|")
    assert marker.split(b"|")[3] == b"H"
    score = await pool.zscore(settings.queue_name, task_id)
    assert score is not None
    assert score >= keys.RUNNING_BASE
    assert await waiting_in_lanes(pool, settings) == 0
    assert await worker.registration() is not None  # nine slots left
    assert (await worker.registration() or [])[1] == "9"
    await pool.publish(keys.wakeup_channel(settings.queue_name), b"mark")  # what comes after the enqueue's turn
    assert await next_notice(pubsub, 5) == b"mark"  # nobody woken by the enqueue
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_job_handed_off_is_not_refused_by_a_queue_full_of_waiting_jobs(pool: ArqRedis, redis_url: str) -> None:
    """The depth limit bounds what waits (due or deferred); a job handed to an idle worker runs at once, like a
    running job it is not counted, and so not refused: the enqueue reads no depth for it. A job that would wait
    is still refused."""
    settings = Settings(redis_url=redis_url, queue_name=f"relay:ho:{uuid.uuid4().hex[:8]}", max_queue_depth=2)
    submitter = Submitter(pool, settings)
    for _ in range(2):
        await submitter.submit("stamp", delay_seconds=3600)
    assert await waiting_in_lanes(pool, settings) == 2  # full
    worker = Worker(pool, settings)
    await worker.claim(10)  # idle: nothing it may take is due, so it registers
    handed = await submitter.submit("stamp")
    assert (await worker.pop() or [None])[0] == handed
    assert await waiting_in_lanes(pool, settings) == 2
    await pool.hdel(keys.idle_registry(settings.queue_name), worker.token)  # type: ignore[misc]
    with pytest.raises(QueueFull):
        await submitter.submit("stamp")  # no idle worker: it would wait, and the queue is full


async def test_the_last_free_slot_used_ends_the_registration(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    await worker.claim(1)
    submitter = Submitter(pool, settings)
    first = await submitter.submit("stamp")
    second = await submitter.submit("stamp")
    assert await worker.registration() is None
    assert (await worker.pop() or [None])[0] == first
    assert await worker.pop() is None  # the second waits in its lane for a claim
    assert await waiting_in_lanes(pool, settings) == 1
    assert (await worker.claim(1))[0] == [second]


async def calls_of(pool: ArqRedis, *commands: str) -> dict[str, int]:
    stats = await pool.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands}


async def test_jobs_handed_to_one_worker_by_one_enqueue_are_written_together(
    pool: ArqRedis, settings: Settings
) -> None:
    """Concurrent submits share an enqueue call; its hand-offs to one worker are one push (which the worker's one
    BLMPOP takes together, worker/handoff.py) and one count, not a push and a count each."""
    submitter = Submitter(pool, settings)
    await submitter.submit("stamp", delay_seconds=3600)  # the script loaded: no NOSCRIPT retry counted below
    worker = Worker(pool, settings)
    await worker.claim(3)
    before = await calls_of(pool, "rpush", "incr", "incrby", "evalsha")
    ids = await asyncio.gather(*(submitter.submit("stamp") for _ in range(3)))
    after = await calls_of(pool, "rpush", "incr", "incrby", "evalsha")
    assert after["evalsha"] - before["evalsha"] == 1  # one enqueue call for the three
    assert [(await worker.pop() or [None])[0] for _ in ids] == list(ids)  # all three handed, in submit order
    assert await worker.pop() is None
    assert await worker.registration() is None  # its three free slots used
    assert await pool.get(keys.handed(worker.token)) == b"3"
    assert after["rpush"] - before["rpush"] == 1
    assert (after["incr"] + after["incrby"]) - (before["incr"] + before["incrby"]) == 1
    assert await waiting_in_lanes(pool, settings) == 1  # the deferred one


def test_every_script_that_hands_off_writes_its_hand_offs() -> None:
    """relay_hand_off only gathers (lib.lua): a script calling it without relay_flush_hand_offs would lose the jobs."""
    lua = Path(shared.__file__).parent / "lua"
    for script in lua.glob("*.lua"):
        text = script.read_text()
        if script.name == "lib.lua":  # relay_flow_release, its one caller there, flushes before it returns
            release = text[text.index("local function relay_flow_release") :]
            text = release[: release.index("\nend\n")]
        if "relay_hand_off(" in text:
            assert "relay_flush_hand_offs(queue)" in text, script.name


async def test_nothing_waiting_is_overtaken(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    busy = Worker(pool, settings, handoffs=False)
    submitter = Submitter(pool, settings)
    await worker.claim(10)
    # A job already waits in its lane (put there with no taker, a full limit, an earlier notice...):
    await pool.hdel(keys.idle_registry(settings.queue_name), worker.token)  # type: ignore[misc]
    waiting = await submitter.submit("stamp")
    await worker.claim(0)  # busy: takes nothing, and so is not registered
    await pool.hset(keys.idle_registry(settings.queue_name), worker.token, "9999999999999|5|10000|,default,|,stamp,")  # type: ignore[misc]
    later = await submitter.submit("stamp")
    assert await worker.pop() is None  # the lane holds a due job: the new one goes behind it
    assert (await busy.claim(10))[0] == [waiting, later]


async def test_deferred_and_limited_jobs_are_never_handed_off(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    submitter = Submitter(pool, settings)
    await worker.claim(10)
    await submitter.submit("stamp", delay_seconds=60)
    assert await worker.pop() is None
    await worker.claim(10)
    await submitter.submit("per_customer", kwargs={"customer_id": "acme"})
    assert await worker.pop() is None


async def test_a_deferred_job_is_named_for_one_registered_worker(pool: ArqRedis, settings: Settings) -> None:
    """It waits in its lane; the worker named for it claims now (which registers it again, until the job falls
    due) and keeps the promise (worker.engine.promises). A notice to all ('d') ended every registration, and every
    idle worker claimed at once to register again, then again as the job fell due."""
    idle = Worker(pool, settings)
    await idle.claim(10)
    other = Worker(pool, settings)
    await other.claim(5)
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    await Submitter(pool, settings).submit("stamp", delay_seconds=60)
    notice = await next_notice(pubsub, 5)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert notice is not None
    due, _, token = notice[1:].partition(b"|")
    assert (notice[:1], token) == (b"e", idle.token.encode())
    seconds, micros = await pool.time()
    assert 59_000 < int(due) - (seconds * 1000 + micros // 1000) <= 60_000  # on Redis's clock
    assert await idle.registration() is None
    assert await other.registration() is not None
    _, _, registered = await idle.claim(10)
    assert registered == 10
    registration = await idle.registration()
    assert registration is not None
    assert int(registration[0]) < int(due)  # registered again, until the job falls due


async def test_a_worker_that_takes_no_handoffs_never_registers(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings, handoffs=False)
    assert (await worker.claim(10))[2] is None
    assert await worker.registration() is None
    await Submitter(pool, settings).submit("stamp")
    assert await worker.pop() is None
    assert await waiting_in_lanes(pool, settings) == 1


async def test_a_claim_counts_handed_jobs_on_their_way_as_taken(pool: ArqRedis, settings: Settings) -> None:
    """A handed job popped but not yet counted by the worker when it works out its free slots: the claim takes
    that many fewer, so a worker of one slot never runs two."""
    worker = Worker(pool, settings)
    submitter = Submitter(pool, settings)
    await worker.claim(1)
    await submitter.submit("stamp")  # handed off: the registration is used up
    waiting = await submitter.submit("stamp")  # into its lane
    # The worker has not received the first yet, so it still counts one free slot:
    assert await worker.claim(1) == ([], [], 0)
    await worker.pop()
    assert (await worker.claim(0))[0] == []  # now running it: no slot free either way
    assert (await worker.claim(1))[0] == [waiting]  # its first job ended (one free slot again)


async def test_a_handed_job_its_worker_never_took_goes_back_with_its_pickup(pool: ArqRedis, settings: Settings) -> None:
    """The worker was lost while idle: its handed job goes back to its lane once the lease lapses, try given back,
    and the next claim runs it as a first try (a lost *running* job costs a pickup; this one never ran)."""
    lost = Worker(pool, settings, lease_ms=1)
    await lost.claim(10)
    task_id = await Submitter(pool, settings).submit("stamp", max_retries=0)
    assert await pool.llen(keys.handoff(lost.token)) == 1  # type: ignore[misc]
    rescuer = Worker(pool, settings, handoffs=False)
    await lapse_one_ms_leases(pool)
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    taken, swept, _ = await rescuer.claim(10)
    assert (taken, swept) == ([], [])  # put back, not taken over
    assert await next_notice(pubsub, 5) == b"j"  # workers that serve it hear of it, whether or not the rescuer does
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await pool.llen(keys.handoff(lost.token)) == 0  # type: ignore[misc]
    assert await pool.get(keys.handed(lost.token)) == b"0"
    assert await pool.get(keys.in_progress(task_id)) is None
    assert await waiting_in_lanes(pool, settings) == 1
    taken, _, _ = await rescuer.claim(10)
    assert taken == [task_id]
    marker = await pool.get(keys.in_progress(task_id))
    assert marker is not None
    assert marker.split(b"|")[1] == b"1"


async def test_the_put_back_leaves_no_count_behind_when_the_lost_workers_count_had_expired(
    pool: ArqRedis, settings: Settings
) -> None:
    """A count lives a day past its registration's start: handed a job just before that, then lost, its worker's
    count expired before the sweep, whose decrement made it -1 with no expiry, a key kept for ever."""
    lost = Worker(pool, settings, lease_ms=1)
    await lost.claim(10)
    await Submitter(pool, settings).submit("stamp")
    await pool.delete(keys.handed(lost.token))  # the day ended between the hand-off and the sweep
    await lapse_one_ms_leases(pool)
    await Worker(pool, settings, handoffs=False).claim(10)
    assert await waiting_in_lanes(pool, settings) == 1  # put back
    assert not await pool.exists(keys.handed(lost.token))


async def test_a_received_handed_job_whose_lease_lapsed_is_taken_over(pool: ArqRedis, settings: Settings) -> None:
    lost = Worker(pool, settings, lease_ms=1)
    await lost.claim(10)
    task_id = await Submitter(pool, settings).submit("stamp")
    await lost.pop()  # it started it, then was lost
    rescuer = Worker(pool, settings, handoffs=False)
    await lapse_one_ms_leases(pool)
    taken, swept, _ = await rescuer.claim(10)
    assert (taken, swept) == ([], [task_id])  # a lost worker's job: the pickup counts


async def test_an_enqueue_sent_twice_hands_off_once(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    await worker.claim(10)
    submitter = Submitter(pool, settings)
    task_id = await submitter.submit("stamp", id="twice")
    assert await submitter.submit("stamp", id="twice") == task_id
    assert await pool.llen(keys.handoff(worker.token)) == 1  # type: ignore[misc]
    assert await pool.get(keys.handed(worker.token)) == b"1"


async def test_a_claim_reads_back_the_count_of_handed_jobs(pool: ArqRedis, settings: Settings) -> None:
    """What the worker reconciles its own count with (``worker.engine.handoffs``: a popped item whose reply was
    lost is counted by Redis only)."""
    worker = Worker(pool, settings)
    await worker.claim(10)
    await Submitter(pool, settings).submit("stamp")
    assert (await worker.claim_reply(10))[3] == 1  # one handed, none received: on its way


async def test_the_count_of_handed_jobs_always_expires(pool: ArqRedis, settings: Settings) -> None:
    """The count's expiry moves on only as a registration starts: a worker renewing one registration without a
    break for longer than the count lives finds it gone, and the hand-off's count creates it again. It must still
    expire (with no expiry it would outlive its worker, one key per worker for good)."""
    worker = Worker(pool, settings)
    await worker.claim(10)
    submitter = Submitter(pool, settings)
    await submitter.submit("stamp")
    day_ms = 86_400_000
    assert 0 < await pool.pttl(keys.handed(worker.token)) <= day_ms
    await pool.delete(keys.handed(worker.token))  # what a day of renewals without a new registration leaves
    await submitter.submit("stamp")
    assert await pool.get(keys.handed(worker.token)) == b"1"
    assert 0 < await pool.pttl(keys.handed(worker.token)) <= day_ms


async def test_a_deferred_job_in_a_batch_lets_a_due_one_of_its_lane_be_handed_off(
    pool: ArqRedis, settings: Settings
) -> None:
    """Concurrent submits share one enqueue call. A deferred job going into its lane holds nothing up: the due
    job after it, of the same lane and a higher priority, takes the one free slot, not the lower-priority one
    after that (found by review: the deferred job made its lane's due job wait, and the later one overtook it)."""
    worker = Worker(pool, settings)
    assert (await worker.claim(1))[2] == 1
    spec = TASKS.get("stamp")
    later = prepare(spec, settings, TaskSubmission(task="stamp", priority=9, delay_seconds=60))
    urgent = prepare(spec, settings, TaskSubmission(task="stamp", priority=9))
    routine = prepare(spec, settings, TaskSubmission(task="stamp", priority=0))
    await Enqueuer(pool, settings, Scripts(pool))._flush_shard([later, urgent, routine])  # one call, as batched
    handed = await worker.pop()
    assert handed is not None
    assert handed[0] == urgent.task_id


async def test_once_a_due_job_of_a_batch_waits_nothing_after_it_is_handed_off(
    pool: ArqRedis, settings: Settings
) -> None:
    worker = Worker(pool, settings)
    await worker.claim(10)
    spec = TASKS.get("stamp")
    # The first goes into its lane (a stale registration of a worker that does not serve the gpu queue)...
    first = prepare(TASKS.get("render"), settings, TaskSubmission(task="render"))
    second = prepare(spec, settings, TaskSubmission(task="stamp"))
    await Enqueuer(pool, settings, Scripts(pool))._flush_shard([first, second])
    assert await worker.pop() is None  # ...so the second waits behind it, and the notice wakes the workers
    assert await worker.registration() is None


async def test_an_idle_claim_that_need_not_renew_costs_one_command(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    await worker.claim(10)
    registration = await worker.registration()
    worker.renew = False
    await pool.config_resetstat()
    assert await worker.claim(10) == ([], [], None)  # registration unchanged
    assert await worker.registration() == registration
    stats = await pool.info("commandstats")
    inside = {
        name: v["calls"] for name, v in stats.items() if name not in ("cmdstat_evalsha", "cmdstat_config|resetstat")
    }
    assert inside == {"cmdstat_zrange": 1, "cmdstat_hget": 1}  # the claim's one command; the HGET is this test's


async def test_a_stopping_worker_hands_a_job_back_as_if_never_claimed(pool: ArqRedis, settings: Settings) -> None:
    """A hand-off that raced the worker leaving the registry (found by the rolling-restart container test: the job
    was re-queued with a ``requeued`` event): back to its lane, no event, its try given back, workers told."""
    worker = Worker(pool, settings)
    await worker.claim(10)
    task_id = await Submitter(pool, settings).submit("stamp")
    await worker.pop()
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    handback = Scripts(pool).handback
    assert await handback(keys=[settings.queue_name], args=[task_id, "host:9:someone"]) == b"gone"  # not its own
    assert await handback(keys=[settings.queue_name], args=[task_id, worker.token]) == b"back"
    assert await next_notice(pubsub, 5) == b"j"
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await handback(keys=[settings.queue_name], args=[task_id, worker.token]) == b"gone"  # sent twice: once
    assert await pool.get(keys.in_progress(task_id)) is None
    assert await pool.get(keys.tries(task_id)) is None
    assert not await pool.exists(keys.events_stream(task_id))  # no event: it never ran
    assert await waiting_in_lanes(pool, settings) == 1
    other = Worker(pool, settings, handoffs=False)
    assert (await other.claim(10))[0] == [task_id]
    marker = await pool.get(keys.in_progress(task_id))
    assert marker is not None
    assert marker.split(b"|")[1] == b"1"  # its first try


# Named claims (shared/keys.py "Named claims"): a job due now left in its lane is given to one registered worker.


async def test_a_limited_job_due_now_is_named_for_one_registered_worker_alone(
    pool: ArqRedis, settings: Settings
) -> None:
    """A notice to all had every idle worker claim for it, all but one taking nothing (8 idle workers: 8 claims
    per submit of a limited task)."""
    roomy, cramped = Worker(pool, settings), Worker(pool, settings)
    await roomy.claim(5)
    await cramped.claim(2)
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    task_id = await Submitter(pool, settings).submit("per_customer", kwargs={"customer_id": "acme"})
    assert await next_notice(pubsub, 5) == b"w" + roomy.token.encode()  # the most free slots
    assert await next_notice(pubsub, 0.2) is None  # and no notice to all
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await roomy.pop() is None  # a limited job is never handed off: the named worker claims it
    assert await roomy.registration() is None  # its claim registers it again
    assert await cramped.registration() is not None  # the other was not woken, and stays registered
    assert (await roomy.claim(5))[0] == [task_id]
    assert await roomy.registration() is not None


async def test_a_job_behind_a_waiting_one_names_another_worker(pool: ArqRedis, settings: Settings) -> None:
    """The first job waits for its named worker's claim; the second, behind it in its lane, is named for the
    other registered worker, so both claim, and each takes one in the lane's order."""
    one, two = Worker(pool, settings), Worker(pool, settings)
    await one.claim(3)
    await two.claim(3)
    submitter = Submitter(pool, settings)
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    first = await submitter.submit("per_customer", kwargs={"customer_id": "acme"})
    second = await submitter.submit("per_customer", kwargs={"customer_id": "acme"})
    notices = [await next_notice(pubsub, 5), await next_notice(pubsub, 5)]
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert sorted(notices) == sorted([b"w" + one.token.encode(), b"w" + two.token.encode()])
    by_token = {one.token: one, two.token: two}
    first_named, second_named = (by_token[notice[1:].decode()] for notice in notices)
    assert (await first_named.claim(1))[0] == [first]
    assert (await second_named.claim(1))[0] == [second]


async def test_a_worker_is_named_for_no_more_jobs_than_its_free_slots(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    await worker.claim(1)
    spec = TASKS.get("per_customer")
    jobs = [prepare(spec, settings, TaskSubmission(task="per_customer", kwargs={"customer_id": c})) for c in "ab"]
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    await Enqueuer(pool, settings, Scripts(pool))._flush_shard(jobs)  # one call, as batched
    # The first is the worker's; for the second, no registered worker has a slot: every worker hears of it.
    notices = {await next_notice(pubsub, 5), await next_notice(pubsub, 5)}
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert notices == {b"w" + worker.token.encode(), b"j"}
    assert await pool.exists(keys.idle_registry(settings.queue_name)) == 0


async def test_with_no_registered_worker_that_runs_it_every_worker_hears_of_a_waiting_job(
    pool: ArqRedis, settings: Settings
) -> None:
    """A registration from before limited tasks were listed (or a worker that does not run the task) is never
    named: the notice goes to all, and ends every registration, as before named claims."""
    worker = Worker(pool, settings)
    await worker.claim(10)
    registry = keys.idle_registry(settings.queue_name)
    entry = (await pool.hget(registry, worker.token)).decode()  # type: ignore[misc]
    await pool.hset(registry, worker.token, entry.replace(",!per_customer,", ","))  # type: ignore[misc]
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    await Submitter(pool, settings).submit("per_customer", kwargs={"customer_id": "acme"})
    assert await next_notice(pubsub, 5) == b"j"
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await worker.registration() is None


async def finish(pool: ArqRedis, settings: Settings, worker: Worker, task_id: str) -> None:
    """Record the task's end (an F op with no events), as the worker's commit does."""
    queue = settings.queue_name
    args = [0, 100, 1_000_000, 60_000, keys.wakeup_channel(queue)]
    args += ["F", task_id, worker.token, 0, 0, '{"rs":"succeeded"}', "0", "0", "", "", ""]  # no link, no inbox
    [(status, _)] = await Scripts(pool).commit(keys=[queue, keys.ABORT_SET, keys.reply_outbox(queue)], args=args)
    assert status == b"ok"


async def test_a_slot_a_commit_frees_is_named_for_one_registered_worker(pool: ArqRedis, settings: Settings) -> None:
    """A full concurrency limit parks its lane until a commit frees a slot; that commit announced the lane to every
    worker, and every idle one claimed for the one slot."""
    runner = Worker(pool, settings, handoffs=False)
    submitter = Submitter(pool, settings)
    acme = [await submitter.submit("per_customer", kwargs={"customer_id": "acme"}) for _ in range(3)]
    assert (await runner.claim(10))[0] == acme[:2]  # the limit, 2: the third's lane is parked
    idle, other = Worker(pool, settings), Worker(pool, settings)
    await idle.claim(5)
    await other.claim(2)
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    await finish(pool, settings, runner, acme[0])
    assert await next_notice(pubsub, 5) == b"w" + idle.token.encode()
    assert await next_notice(pubsub, 0.2) is None
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await other.registration() is not None
    assert (await idle.claim(5))[0] == [acme[2]]


async def test_a_named_worker_that_cannot_take_its_job_tells_all_as_a_notice_to_all_would(
    pool: ArqRedis, settings: Settings
) -> None:
    """wake_all.lua (worker/wakeup.py, worker/engine/promises.py): every registration ends, so nothing is handed
    off past the waiting job while the woken workers claim, and the notice goes out."""
    idle = Worker(pool, settings)
    await idle.claim(10)
    channel = keys.wakeup_channel(settings.queue_name)
    pubsub = pool.pubsub()
    await pubsub.subscribe(channel)
    for _ in range(2):  # safe to apply twice (sent again after a timeout)
        await Scripts(pool).wake_all(keys=[settings.queue_name], args=[channel, "j"])
        assert await next_notice(pubsub, 5) == b"j"
        assert await idle.registration() is None
    await pubsub.aclose()  # type: ignore[no-untyped-call]
