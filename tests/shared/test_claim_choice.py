"""The claim's choice among due lanes (``shared/lua/claim.lua``, designed in ``shared/keys.py``), script by script
against a real Redis: queue order, priority, weighted fair shares between tenants, concurrency limits that park a
lane until a commit frees a slot, and rate limits on Redis's clock. The end-to-end behaviour, with real worker
processes, is in tests/e2e/test_queues_and_limits.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasks import TaskSubmission
from worker.tasks import load

TASKS = load(["worker.tasks.demo", "tests.support.tasks"])


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:cc:{uuid.uuid4().hex[:8]}")


class Bench:
    """Enqueue through the real enqueue path; claim and commit by calling the scripts as a worker does."""

    def __init__(self, pool: ArqRedis, settings: Settings) -> None:
        self.pool, self.settings, self.scripts = pool, settings, Scripts(pool)
        self.enqueuer = Enqueuer(pool, settings, self.scripts)
        self.requests = 0
        self.token = f"host:1:{uuid.uuid4().hex[:8]}"  # a worker of its own: claim records are per worker

    async def submit(self, task: str, tenant: str | None = None, **fields: Any) -> str:
        submission = TaskSubmission(task=task, **fields)
        prepared = prepare(TASKS.get(task), self.settings, submission, tenant=tenant)
        return (await self.enqueuer.enqueue(prepared)).task_id

    async def claim(
        self, limit: int, queues: str = "default", weights: str = "", tasks: list[str] | None = None
    ) -> tuple[list[str], Any, Any]:
        """Claim up to ``limit`` (of ``tasks`` only, if given): the ids in the order taken, the next-due delay and the
        held-back counts."""
        self.requests += 1
        entries = tasks if tasks is not None else TASKS.claim_entries()
        args = [str(self.requests), limit, 10_000, self.token, 0, queues, weights, "", *entries]
        queue = self.settings.queue_name
        reply = await self.scripts.claim(keys=[queue, keys.ABORT_SET, keys.claim_request(self.token)], args=args)
        claimed, _, next_due, _, _, held, *_ = reply
        return [item[0].decode() for item in claimed], next_due, held

    async def finish(self, task_id: str) -> None:
        """Record the task's end (an F op with no events), as the worker's commit does."""
        queue = self.settings.queue_name
        args = [0, 100, 1_000_000, 60_000, keys.wakeup_channel(queue)]
        args += ["F", task_id, self.token, 0, 0, '{"rs":"succeeded"}', "0", "0", "", "", ""]  # no link, no inbox
        [(status, _)] = await self.scripts.commit(keys=[queue, keys.ABORT_SET, keys.reply_outbox(queue)], args=args)
        assert status == b"ok"


async def test_queues_in_the_workers_order_then_priority_then_fifo(pool: ArqRedis, settings: Settings) -> None:
    bench = Bench(pool, settings)
    low = [await bench.submit("stamp") for _ in range(2)]
    gpu = await bench.submit("render", priority=9)
    high = await bench.submit("stamp", priority=7)
    taken, _, _ = await bench.claim(10, queues="default,gpu")
    assert taken == [high, *low, gpu]
    assert await bench.claim(10, queues="default,gpu") == ([], None, [0, 0])


async def test_a_worker_takes_nothing_from_a_queue_it_does_not_serve(pool: ArqRedis, settings: Settings) -> None:
    bench = Bench(pool, settings)
    gpu = await bench.submit("render")
    assert (await bench.claim(10))[0] == []
    assert (await bench.claim(10, queues="gpu"))[0] == [gpu]


@pytest.mark.parametrize(("weights", "first_four"), [("", "abab"), ("b=3", "abbb")])
async def test_tenants_share_claims_by_weight(
    pool: ArqRedis, settings: Settings, weights: str, first_four: str
) -> None:
    bench = Bench(pool, settings)
    owner = {}
    for tenant in ("a", "b"):
        for _ in range(6):
            owner[await bench.submit("stamp", tenant=tenant)] = tenant
    order = ""
    for _ in range(4):
        taken, _, _ = await bench.claim(1, weights=weights)
        order += owner[taken[0]]
    assert order == first_four


async def shared_out(pool: ArqRedis, settings: Settings, weights: str, busy_task: str | None) -> str:
    """Whose tasks each of 8 claims of one gives, tenants a and b having 10 each; with ``busy_task``, a busy pool
    claims 10 of it (tenants x and y) before each of them."""
    busy, this = Bench(pool, settings), Bench(pool, settings)
    if busy_task is not None:
        for tenant in ("x", "y"):
            for _ in range(60):
                await busy.submit(busy_task, tenant=tenant)  # render runs on its own queue, gpu
    owner = {}
    for tenant in ("a", "b"):
        for _ in range(10):
            owner[await this.submit("stamp", tenant=tenant)] = tenant
    order = ""
    for _ in range(8):
        if busy_task is not None:
            await busy.claim(10, queues="default,gpu", weights=weights, tasks=[busy_task])
        taken, _, _ = await this.claim(1, weights=weights, tasks=["stamp"])
        order += owner[taken[0]]
    return order


@pytest.mark.parametrize("weights", ["", "b=3"])
@pytest.mark.parametrize("busy_task", ["render", "inc"], ids=["another-queue", "a-pool-of-other-tasks"])
async def test_tenants_share_a_queue_whatever_other_queues_and_pools_claim(
    pool: ArqRedis, redis_url: str, weights: str, busy_task: str
) -> None:
    """A busy pool claims 10 at a time from its own tenants (another named queue's, or other tasks of the same
    queue) between this pool's claims of one: the floor of their contests raised this contest's tenants to it at
    every claim, both started level, and the first by name won every claim ('aaaaaaaa'), weights ignored. Now the
    order is the one this pool gets alone."""
    alone = await shared_out(
        pool, Settings(redis_url=redis_url, queue_name=f"relay:cc:{uuid.uuid4().hex[:8]}"), weights, None
    )
    assert alone.count("b") == (4 if not weights else 6)
    beside = Settings(redis_url=redis_url, queue_name=f"relay:cc:{uuid.uuid4().hex[:8]}")
    assert await shared_out(pool, beside, weights, busy_task) == alone


async def test_a_full_concurrency_key_is_parked_without_blocking_others_until_a_slot_frees(
    pool: ArqRedis, settings: Settings
) -> None:
    bench = Bench(pool, settings)
    acme = [await bench.submit("per_customer", kwargs={"customer_id": "acme"}) for _ in range(4)]
    globex = await bench.submit("per_customer", kwargs={"customer_id": "globex"})
    taken, _, held = await bench.claim(10)
    assert taken == [*acme[:2], globex]  # two of acme's (its limit), and globex's behind them
    assert held == [1, 0]  # acme's lane filled its limit: parked at once, and counted
    # Parked: not read again; its marker waits PARK_MS at most (a safety net: the slot's commit brings it back).
    taken, next_due, held = await bench.claim(10)
    assert (taken, held) == ([], [0, 0])
    assert 0 < int(next_due) <= keys.PARK_MS
    await bench.finish(acme[0])
    assert (await bench.claim(10))[0] == [acme[2]]  # the freed slot unparked the lane
    marker = await pool.get(keys.in_progress(acme[2]))
    assert marker is not None
    assert marker.split(b"|")[3] == b"S"  # it holds a slot


async def test_a_rate_limit_spaces_starts_on_redis_clock(pool: ArqRedis, settings: Settings) -> None:
    bench = Bench(pool, settings)
    ids = [await bench.submit("five_per_second") for _ in range(3)]
    taken, next_due, held = await bench.claim(10)
    assert (taken, held) == (ids[:1], [0, 1])
    assert 150 <= int(next_due) <= 200  # the next start is allowed 200 ms after this one
    taken, next_due, held = await bench.claim(10)
    assert (taken, held) == ([], [0, 0])  # its lane's marker waits for that moment: nothing due to read
    assert 0 < int(next_due) <= 200


async def test_only_the_worker_that_took_a_rate_limited_start_wakes_for_the_next(
    pool: ArqRedis, settings: Settings
) -> None:
    """Every worker that claimed while the lane was held used to wake at its next allowed start, and all but one
    found it taken: the others now come back four intervals later (five_per_second: 200 ms between starts)."""
    waker, other = Bench(pool, settings), Bench(pool, settings)
    ids = [await waker.submit("five_per_second") for _ in range(3)]
    taken, next_due, _ = await waker.claim(10)
    assert taken == ids[:1]
    assert 150 <= int(next_due) <= 200
    taken, next_due, _ = await other.claim(10)
    assert taken == []
    assert 800 < int(next_due) <= 1000  # past the start (200 ms ahead at most), by four intervals
    taken, next_due, _ = await waker.claim(10)  # the waker itself, woken early (a notice): still the start
    assert taken == []
    assert 0 < int(next_due) <= 200


async def test_a_worker_left_without_a_slot_names_no_waker(pool: ArqRedis, settings: Settings) -> None:
    """Its last slot taken, it may not be free at the next start: every worker then wakes for that start."""
    full, other = Bench(pool, settings), Bench(pool, settings)
    await full.submit("five_per_second")
    await full.submit("five_per_second")
    assert len((await full.claim(1))[0]) == 1
    taken, next_due, _ = await other.claim(10)
    assert taken == []
    assert 0 < int(next_due) <= 200


async def test_a_start_its_waker_misses_is_taken_by_another_worker_which_then_wakes_for_the_next(
    pool: ArqRedis, settings: Settings
) -> None:
    waker, other = Bench(pool, settings), Bench(pool, settings)
    ids = [await waker.submit("five_per_second") for _ in range(3)]
    assert (await waker.claim(10))[0] == ids[:1]
    deadline = asyncio.get_running_loop().time() + 10
    while not (taken := (await other.claim(10))[0]):  # the waker never comes back (stopped)
        assert asyncio.get_running_loop().time() < deadline, "the other worker never took the start"
        await asyncio.sleep(0.02)
    assert taken == ids[1:2]
    taken, next_due, _ = await waker.claim(10)  # the old waker is now one of the others
    assert taken == []
    assert 800 < int(next_due) <= 1000
    assert 0 < int((await other.claim(10))[1]) <= 200


async def test_jobs_submitted_within_one_millisecond_are_claimed_in_submit_order(
    pool: ArqRedis, settings: Settings
) -> None:
    """Lane scores carry microseconds (enqueue.lua): ids, random, no longer decide the order of one ms's jobs."""
    bench = Bench(pool, settings)
    ids = [await bench.submit("stamp") for _ in range(30)]
    taken, _, _ = await bench.claim(30)
    assert taken == ids


async def test_priority_orders_a_tenants_own_work_and_never_jumps_another_tenant(
    pool: ArqRedis, settings: Settings
) -> None:
    bench = Bench(pool, settings)
    a_low = [await bench.submit("stamp", tenant="a") for _ in range(3)]
    b_high = [await bench.submit("stamp", tenant="b", priority=9) for _ in range(3)]
    a_urgent = await bench.submit("stamp", tenant="a", priority=9)
    taken = [(await bench.claim(1))[0][0] for _ in range(4)]
    # Turns alternate between tenants, whatever b's priorities; a's own urgent job leads a's turns.
    assert taken == [a_urgent, b_high[0], a_low[0], b_high[1]]


async def test_a_claim_with_no_room_still_says_work_is_due(pool: ArqRedis, settings: Settings) -> None:
    """A worker whose slots are all busy claims with limit 0: the answer must say jobs are due now, so it claims
    as soon as a slot frees rather than at its next poll (2 s later)."""
    bench = Bench(pool, settings)
    await bench.submit("stamp")
    taken, next_due, _ = await bench.claim(0)
    assert (taken, next_due) == ([], 0)
