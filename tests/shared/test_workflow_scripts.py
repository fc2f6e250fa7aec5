"""Workflows' orchestration in the scripts that commit a step's end (``commit.lua``, op F; ``lib.lua``
``relay_flow_step_ended``), against a real Redis, by calling the scripts as a worker does: a commit applied twice
(a retried call after a timeout) advances a chain once, a chord's callback is released once, when its last member
ends, whatever the order and however the ends are batched. The end-to-end behaviour, with real processes and
workers killed at random, is in tests/e2e/test_workflows.py and tests/e2e/test_faults.py."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.enqueue import TaskShape
from shared.events import EventLog
from shared.jobs import JobRecord
from shared.scripts import Scripts
from shared.serialization import loads
from shared.settings import Settings
from shared.transitions import Transitions
from shared.workflows.canvas import WorkflowSubmission
from shared.workflows.store import Workflows, prepare_workflow
from worker.engine import outcomes
from worker.engine.outcomes import RunFacts
from worker.tasks import load

TASKS = load(["worker.tasks.demo", "tests.support.tasks"])


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:wfs:{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = ArqRedis.from_url(redis_url)
    yield client
    await client.aclose()


class Worker:
    """Claims and commits as a worker's engine does, one script call at a time."""

    def __init__(self, pool: ArqRedis, settings: Settings) -> None:
        self.pool, self.settings, self.scripts = pool, settings, Scripts(pool)
        self.workflows = Workflows(pool, self.scripts, settings, Transitions(pool, self.scripts, settings))
        self.token = f"host:1:{uuid.uuid4().hex[:8]}"
        self.requests = 0
        self.log = EventLog(pool, max_len=1000, ttl_seconds=60, stream=keys.flow_events)

    async def submit(self, workflow: dict[str, Any]) -> str:
        async def shape_of(name: str) -> TaskShape:
            return TASKS.get(name)

        submission = WorkflowSubmission.model_validate({"workflow": workflow})
        prepared = await prepare_workflow(submission, shape_of, self.settings, None)
        return (await self.workflows.submit(prepared)).flow_id

    async def claim(self) -> dict[str, JobRecord]:
        """Every due job: id -> its record."""
        self.requests += 1
        queue = self.settings.queue_name
        args = [str(self.requests), 1000, 60_000, self.token, 0, "default", "", *TASKS.claim_entries()]
        claimed = (await self.scripts.claim(keys=[queue, keys.ABORT_SET, keys.claim_request(self.token)], args=args))[0]
        return {item[0].decode(): JobRecord.decode(item[1]) for item in claimed}

    def end_args(self, task_id: str, record: JobRecord, result: Any) -> list[Any]:
        """The commit's arguments for one F op: the step succeeded with ``result``."""
        facts = RunFacts(task_id, self.token, self.settings.queue_name, 1, 1, record, record.function)
        op = outcomes.op_for(outcomes.succeeded(result), facts, 0)
        return op.args()

    async def commit(self, *ops: list[Any]) -> list[str]:
        queue = self.settings.queue_name
        args: list[Any] = [0, 1000, 1_000_000, 60_000, keys.wakeup_channel(queue)]
        for op in ops:
            args += op
        replies = await self.scripts.commit(keys=[queue, keys.ABORT_SET, keys.reply_outbox(queue)], args=args)
        return [status.decode() for status, _ in replies]

    async def events(self, flow: str) -> list[tuple[str, int | None]]:
        """The workflow's own events: (type, step)."""
        found = []
        for _, raw in await self.log.read_after(flow, 0, count=10_000):
            event = loads(raw)
            if "step_seq" not in event:
                found.append((event["type"], event.get("step")))
        return found


async def test_a_commit_applied_twice_advances_the_chain_once(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    flow = await worker.submit({"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}, {"task": "inc"}]})
    first = await worker.claim()
    assert list(first) == [f"{flow}:0"]
    end = worker.end_args(f"{flow}:0", first[f"{flow}:0"], 2)
    assert await worker.commit(end) == ["ok"]
    assert await worker.commit(end) == ["dup"]  # the same call again, as after a timeout: nothing more happens
    second = await worker.claim()
    assert list(second) == [f"{flow}:1"]
    assert second[f"{flow}:1"].params == {"x": 2, "seconds": 0.0}  # its input: the result before it
    assert await worker.claim() == {}  # released once: no second copy waits
    assert await worker.events(flow) == [
        ("workflow_started", None),
        ("step_started", 0),
        ("step_ended", 0),
        ("step_started", 1),
    ]
    assert await pool.hget(keys.flow(flow), "active") == b"1"


async def test_an_end_from_a_worker_that_lost_the_step_changes_nothing(pool: ArqRedis, settings: Settings) -> None:
    worker, other = Worker(pool, settings), Worker(pool, settings)
    flow = await worker.submit({"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}]})
    record = (await worker.claim())[f"{flow}:0"]
    stale = other.end_args(f"{flow}:0", record, 2)  # not the owner's token
    assert await other.commit(stale) == ["fenced"]
    assert await worker.claim() == {}
    assert await worker.commit(worker.end_args(f"{flow}:0", record, 2)) == ["ok"]
    assert list(await worker.claim()) == [f"{flow}:1"]


@pytest.mark.parametrize("batched", [False, True])
async def test_a_chords_callback_is_released_once_when_its_last_member_ends(
    pool: ArqRedis, settings: Settings, batched: bool
) -> None:
    worker = Worker(pool, settings)
    members = [{"task": "inc", "args": [i]} for i in range(20)]
    flow = await worker.submit({"chord": members, "callback": {"task": "tsum"}})
    claimed = await worker.claim()
    assert len(claimed) == 20
    ends = [worker.end_args(task_id, record, record.params["x"] + 1) for task_id, record in claimed.items()]
    random.Random(7).shuffle(ends)
    if batched:  # every end in one commit call, sent twice
        assert await worker.commit(*ends) == ["ok"] * 20
        assert await worker.commit(*ends) == ["dup"] * 20
    else:
        for end in ends[:-1]:
            assert await worker.commit(end) == ["ok"]
            assert await worker.claim() == {}  # not before the last member
        assert await worker.commit(ends[-1]) == ["ok"]
        assert await worker.commit(ends[-1]) == ["dup"]
    callback = await worker.claim()
    assert list(callback) == [f"{flow}:20"]
    assert sorted(callback[f"{flow}:20"].params["numbers"]) == list(range(1, 21))
    assert callback[f"{flow}:20"].params["numbers"] == [
        claimed[f"{flow}:{i}"].params["x"] + 1 for i in range(20)
    ]  # in member order, whatever order they ended in
    started = [step for kind, step in await worker.events(flow) if kind == "step_started"]
    assert started.count(20) == 1
    end = worker.end_args(f"{flow}:20", callback[f"{flow}:20"], 210)
    assert await worker.commit(end) == ["ok"]
    assert await worker.commit(end) == ["dup"]
    events = await worker.events(flow)
    assert [kind for kind, _ in events].count("workflow_end") == 1
    assert await pool.hget(keys.flow(flow), "st") == b"succeeded"
    assert await pool.pttl(keys.flow(flow)) > 0  # bounded: it expires with its results


async def test_the_workflow_index_forgets_workflows_that_expired(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    kept, expired = [await worker.submit({"task": "inc", "args": [i]}) for i in range(2)]
    await pool.delete(keys.flow(expired))  # as its TTL would, after it ended
    index = keys.flow_index(settings.queue_name)
    removed, examined, left = await worker.scripts.maintenance(keys=[index], args=[1000, 500, 0, "flows"])
    assert (removed, examined, left) == (1, 2, 1)
    assert await worker.workflows.list_ids("", 10) == [kept]


async def test_the_workflow_log_keeps_within_its_caps_and_recounts_after_it_expired(
    pool: ArqRedis, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, queue_name=f"relay:wfs:{uuid.uuid4().hex[:8]}", workflow_log_max_len=10)
    worker = Worker(pool, settings)
    flow = await worker.submit({"chain": [{"task": "inc", "args": [0]}] + [{"task": "inc"}] * 13})
    stream, key = keys.flow_events(flow), keys.flow(flow)

    async def counts() -> tuple[int, int, int, int]:
        entries = await pool.xrange(stream)
        length, size = await pool.hmget(key, ["le", "lb"])
        return len(entries), sum(len(e[1][b"e"]) for e in entries), int(length), int(size)

    for step in range(14):  # an entry per commit: more than the cap of 10
        record = (await worker.claim())[f"{flow}:{step}"]
        if step == 11:
            await pool.delete(stream)  # as if it expired during a long silence: the hash's counts are stale
        assert await worker.commit(worker.end_args(f"{flow}:{step}", record, step + 1)) == ["ok"]
        entries, size, length, counted = await counts()
        assert entries <= 10
        assert (length, counted) == (entries, size)  # the counts the appends rely on are the log's own
    assert await pool.hget(key, "st") == b"succeeded"
