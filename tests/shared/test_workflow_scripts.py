"""Workflows' orchestration in the scripts that commit a step's end (``commit.lua``, op F; ``lib.lua``
``relay_flow_step_ended``), against a real Redis, by calling the scripts as a worker does: a commit applied twice
(a retried call after a timeout) advances a chain once, a chord's callback is released once, when its last member
ends, whatever the order and however the ends are batched; a map over the value before it expands once, into one
step per item, and ends with their list. The end-to-end behaviour, with real processes and workers killed at
random, is in tests/e2e/test_workflows.py and tests/e2e/test_faults.py."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.enqueue import Enqueuer, Links, TaskShape, prepare
from shared.errors import IdConflict
from shared.events import EventLog
from shared.jobs import JobRecord
from shared.scripts import Scripts, with_library
from shared.serialization import loads
from shared.settings import Settings
from shared.tasks import TaskSubmission
from shared.transitions import Transitions
from shared.workflows.canvas import WorkflowSubmission
from shared.workflows.store import Workflows, prepare_workflow
from tests.support.claims import Submitter
from worker.engine import outcomes
from worker.engine.outcomes import RunFacts
from worker.tasks import load

TASKS = load(["worker.tasks.demo", "tests.support.tasks"])


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:wfs:{uuid.uuid4().hex[:8]}")


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
        args = [str(self.requests), 1000, 60_000, self.token, 0, "default", "", "", *TASKS.claim_entries()]
        claimed = (await self.scripts.claim(keys=[queue, keys.ABORT_SET, keys.claim_request(self.token)], args=args))[0]
        return {item[0].decode(): JobRecord.decode(item[1]) for item in claimed}

    async def register(self) -> None:
        """An idle claim that takes nothing and registers this worker for hand-offs (shared/keys.py "Hand-off")."""
        self.requests += 1
        queue = self.settings.queue_name
        args = [str(self.requests), 10, 60_000, self.token, 0, "default", "", "5000:0:1:1", *TASKS.claim_entries()]
        reply = await self.scripts.claim(keys=[queue, keys.ABORT_SET, keys.claim_request(self.token)], args=args)
        assert reply[0] == [], "nothing waited: a registration takes nothing"
        assert await self.pool.hexists(keys.idle_registry(queue), self.token)  # type: ignore[misc]

    async def pop(self) -> dict[str, tuple[JobRecord, int]]:
        """The jobs handed to this worker (its list, as ``HandoffListener`` takes it): id -> (record, try)."""
        raw = await self.pool.lpop(keys.handoff(self.token), 100)  # type: ignore[misc]
        items = [json.loads(one) for one in raw or []]
        return {item[0]: (JobRecord.decode(item[1].encode()), item[2]) for item in items}

    def end_args(
        self, task_id: str, record: JobRecord, result: Any, failure: BaseException | None = None, seq: int = 0
    ) -> list[Any]:
        """The commit's arguments for one F op: the step succeeded with ``result`` (or failed with ``failure``); its
        events follow ``seq`` (a step run again continues its log)."""
        facts = RunFacts(task_id, self.token, self.settings.queue_name, 1, 1, record, record.function)
        ending = outcomes.succeeded(result) if failure is None else outcomes.failed(failure)
        op = outcomes.op_for(ending, facts, seq)
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


async def test_a_step_whose_record_was_lost_still_ends_by_its_link(pool: ArqRedis, settings: Settings) -> None:
    """JobRecordMissing: the step's commit finds no record to read its workflow from, and its link names it."""
    worker = Worker(pool, settings)
    flow = await worker.submit({"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}]})
    record = (await worker.claim())[f"{flow}:0"]
    await pool.delete(keys.job(f"{flow}:0"))
    assert await worker.commit(worker.end_args(f"{flow}:0", record, 2)) == ["ok"]
    assert await pool.hget(keys.flow(flow), "s:0") == b"S"  # type: ignore[misc]
    assert list(await worker.claim()) == [f"{flow}:1"]


async def test_a_child_of_a_step_whose_record_was_lost_does_not_end_the_step(
    pool: ArqRedis, settings: Settings
) -> None:
    """A step's child carries the step's link too: its end, its record lost, ended the step still running (with
    the child's value) and released the next step; the step's own end was then ignored."""
    worker = Worker(pool, settings)
    flow = await worker.submit({"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}]})
    await worker.claim()
    links = Links(flow=flow, step=0, parent=f"{flow}:0")
    child = prepare(TASKS.get("inc"), settings, TaskSubmission(task="inc", args=[5], id=f"{flow}:0.1"), links=links)
    await Enqueuer(pool, settings, Scripts(pool)).enqueue(child)
    record = (await worker.claim())[child.task_id]
    await pool.delete(keys.job(child.task_id))  # lost while the child runs
    assert await worker.commit(worker.end_args(child.task_id, record, 6)) == ["ok"]
    assert await pool.hget(keys.flow(flow), "s:0") == b"Q"  # type: ignore[misc]  # still running
    assert await worker.claim() == {}  # step 1 not released


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
    assert await worker.workflows.list_page("", 10, None, None) == ([(kept, "running", 1)], None)


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


# A map over the value before it (a map node without items): chain [inc, map inc, tsum] is steps 0, 1 (the map) and
# 2; the map's members are numbered after the last step, 3 on.
MAPPED = {"chain": [{"task": "inc", "args": [0]}, {"map": "inc"}, {"task": "tsum"}]}


async def _first_step_ends_with(worker: Worker, value: Any) -> str:
    """Submit ``MAPPED`` and end its first step with ``value`` (the commit sent twice); returns the workflow's id."""
    flow = await worker.submit(MAPPED)
    record = (await worker.claim())[f"{flow}:0"]
    end = worker.end_args(f"{flow}:0", record, value)
    assert await worker.commit(end) == ["ok"]
    assert await worker.commit(end) == ["dup"]
    return flow


async def test_a_map_over_the_value_before_it_expands_once_into_a_step_per_item(
    pool: ArqRedis, settings: Settings
) -> None:
    worker = Worker(pool, settings)
    flow = await _first_step_ends_with(worker, [5, 6, "x@1", {"a": [1.5, "]"]}])
    members = await worker.claim()
    assert sorted(members) == [f"{flow}:{j}" for j in (3, 4, 5, 6)]
    # Each member takes its item, byte for byte (a string that looks like a template stays one), as its first
    # positional argument.
    assert [members[f"{flow}:{j}"].params["x"] for j in (3, 4, 5, 6)] == [5, 6, "x@1", {"a": [1.5, "]"]}]
    assert await worker.claim() == {}  # expanded once
    assert await pool.hget(keys.flow(flow), "n") == b"7"
    assert await worker.events(flow) == [
        ("workflow_started", None),
        ("step_started", 0),
        ("step_ended", 0),
        ("step_started", 1),  # the map, naming its members
        *[("step_started", j) for j in (3, 4, 5, 6)],
    ]
    logged = [loads(raw) for _, raw in await worker.log.read_after(flow, 0, count=100)]
    started = [e for e in logged if e["type"] == "step_started"]
    assert started[1]["data"] == {"task": "inc", "members": {"first": 3, "count": 4}}
    ends = [worker.end_args(f"{flow}:{j}", members[f"{flow}:{j}"], j * 10) for j in (3, 4, 5, 6)]
    random.Random(3).shuffle(ends)
    for end in ends[:-1]:
        assert await worker.commit(end) == ["ok"]
        assert await worker.claim() == {}  # the step after the map waits for every member
    assert await worker.commit(ends[-1], ends[-1]) == ["ok", "dup"]
    after = await worker.claim()
    assert list(after) == [f"{flow}:2"]
    assert after[f"{flow}:2"].params["numbers"] == [30, 40, 50, 60]  # the map's value: its members', in order
    assert [kind for kind, step in await worker.events(flow) if step == 1] == ["step_started", "step_ended"]
    assert await worker.commit(worker.end_args(f"{flow}:2", after[f"{flow}:2"], 180)) == ["ok"]
    view = await worker.workflows.view(flow)
    assert view is not None
    assert (view["state"], view["result"], view["steps"]) == ("succeeded", 180, 7)
    mapped = view["tree"]["children"][1]
    assert (mapped["kind"], mapped["step"], mapped["state"]) == ("map", 1, "succeeded")
    assert [(c["step"], c["task_id"], c["state"]) for c in mapped["children"]] == [
        (j, f"{flow}:{j}", "succeeded") for j in (3, 4, 5, 6)
    ]


async def test_a_maps_expansion_reached_twice_expands_once(pool: ArqRedis, settings: Settings) -> None:
    """The orchestration itself, called twice for one end (as a replayed commit would, were it not a ``dup``
    already): the second call finds the step ended and changes nothing."""
    worker = Worker(pool, settings)
    flow = await worker.submit(MAPPED)
    await worker.claim()
    twice = with_library(
        "local wake = {}\n"
        "local first = relay_flow_step_ended(KEYS[1], ARGV[1], '0', 'S', '[1,2,3]', relay_now(), 60000, wake)\n"
        "local second = relay_flow_step_ended(KEYS[1], ARGV[1], '0', 'S', '[1,2,3]', relay_now(), 60000, wake)\n"
        "relay_flow_flush(60000)\n"
        "return {first and 1 or 0, second and 1 or 0}"
    )
    assert await pool.eval(twice, 1, settings.queue_name, flow) == [1, 0]
    assert sorted(await worker.claim()) == [f"{flow}:{j}" for j in (3, 4, 5)]
    assert await pool.hget(keys.flow(flow), "n") == b"6"
    assert [kind for kind, step in await worker.events(flow) if step == 1] == ["step_started"]


async def test_a_map_over_an_empty_list_is_an_empty_list_at_once(pool: ArqRedis, settings: Settings) -> None:
    worker = Worker(pool, settings)
    flow = await _first_step_ends_with(worker, [])
    after = await worker.claim()
    assert list(after) == [f"{flow}:2"]  # released by the same commit that ended step 0
    assert after[f"{flow}:2"].params["numbers"] == []
    assert [kind for kind, step in await worker.events(flow) if step == 1] == ["step_started", "step_ended"]
    assert await pool.hget(keys.flow(flow), "n") == b"3"


async def test_a_map_over_a_value_that_is_not_a_list_fails_and_the_chain_with_it(
    pool: ArqRedis, settings: Settings
) -> None:
    worker = Worker(pool, settings)
    flow = await _first_step_ends_with(worker, {"not": "a list"})
    assert await worker.claim() == {}
    view = await worker.workflows.view(flow)
    assert view is not None
    assert view["state"] == "failed"
    assert (view["error"]["step"], view["error"]["error_type"]) == (1, "MapOverNonList")
    assert "which is an object, not a list" in view["error"]["message"]
    assert [c["state"] for c in view["tree"]["children"]] == ["succeeded", "failed", "skipped"]


async def test_a_map_too_wide_for_the_workflow_fails_it_and_expands_nothing(pool: ArqRedis, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, queue_name=f"relay:wfs:{uuid.uuid4().hex[:8]}", max_workflow_steps=6)
    worker = Worker(pool, settings)
    flow = await _first_step_ends_with(worker, [1, 2, 3, 4])  # 3 steps + 4 members > 6
    assert await worker.claim() == {}
    key = keys.flow(flow)
    assert await pool.hget(key, "n") == b"3"
    assert not await pool.hexists(key, "t:3")  # nothing half-written
    view = await worker.workflows.view(flow)
    assert view is not None
    assert (view["state"], view["error"]["step"], view["error"]["error_type"]) == ("failed", 1, "TooManySteps")
    assert "may have at most 6" in view["error"]["message"]
    flow = await _first_step_ends_with(worker, [1, 2, 3])  # exactly 6: fits
    assert len(await worker.claim()) == 3


async def test_a_failed_member_fails_the_map_and_a_retry_runs_only_that_member(
    pool: ArqRedis, settings: Settings
) -> None:
    worker = Worker(pool, settings)
    flow = await _first_step_ends_with(worker, [1, 2, 3])
    members = await worker.claim()
    ok = [worker.end_args(f"{flow}:{j}", members[f"{flow}:{j}"], j) for j in (3, 5)]
    failed = worker.end_args(f"{flow}:4", members[f"{flow}:4"], None, RuntimeError("no"))
    assert await worker.commit(ok[0], failed) == ["ok", "ok"]
    assert await worker.claim() == {}
    assert await pool.hget(keys.flow(flow), "st") == b"running"  # member 5 still runs: the map waits for it
    assert await worker.commit(ok[1]) == ["ok"]
    view = await worker.workflows.view(flow)
    assert view is not None
    assert view["state"] == "failed"
    assert (view["error"]["step"], view["error"]["task_id"]) == (4, f"{flow}:4")  # the member that failed
    assert [c["state"] for c in view["tree"]["children"]] == ["succeeded", "failed", "skipped"]
    assert [c["state"] for c in view["tree"]["children"][1]["children"]] == ["succeeded", "failed", "succeeded"]
    assert await worker.workflows.retry(flow) == ("queued", None)
    again = await worker.claim()
    assert list(again) == [f"{flow}:4"]  # not expanded again: the failed member runs again, alone
    assert await pool.hget(keys.flow(flow), "n") == b"6"
    seq = int(await pool.get(keys.event_seq(f"{flow}:4")))
    assert await worker.commit(worker.end_args(f"{flow}:4", again[f"{flow}:4"], 4, seq=seq)) == ["ok"]
    after = await worker.claim()
    assert after[f"{flow}:2"].params["numbers"] == [3, 4, 5]


async def register_idle(pool: ArqRedis, settings: Settings, token: str, runs: tuple[str, ...] = ()) -> None:
    """An idle worker's claim that registers it for hand-offs (shared/keys.py "Hand-off"); a worker of the tasks
    ``runs`` only, if given."""
    queue = settings.queue_name
    entries = [e for e in TASKS.claim_entries() if not runs or e.split("=")[0] in runs]
    args = [uuid.uuid4().hex, 10, 60_000, token, 0, "default", "", "5000:0:1:1", *entries]
    await Scripts(pool).claim(keys=[queue, keys.ABORT_SET, keys.claim_request(token)], args=args)


async def next_notice(pubsub: Any) -> bytes | None:
    """The next wake-up notice within 5 s, past the subscription's own confirmation."""
    for _ in range(2):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        if message is not None:
            return bytes(message["data"])
    return None


async def test_released_steps_go_to_a_registered_idle_worker_as_hand_offs(pool: ArqRedis, settings: Settings) -> None:
    """A workflow's first steps, and each step a commit releases, are handed to a registered idle worker as a
    submit due now is (shared/keys.py "Hand-off"): claimed for it in the same script call, pushed onto its list,
    with no wake-up notice and no claim."""
    worker = Worker(pool, settings)
    await worker.register()
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    flow = await worker.submit({"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}]})
    first = await worker.pop()
    assert list(first) == [f"{flow}:0"]
    record, tried = first[f"{flow}:0"]
    assert tried == 1
    marker = await pool.get(keys.in_progress(f"{flow}:0"))
    assert marker is not None
    assert marker.decode().startswith(worker.token + "|1|")
    assert marker.split(b"|")[3] == b"H"  # handed: what the sweep puts back if the worker never takes it
    assert await worker.commit(worker.end_args(f"{flow}:0", record, 2)) == ["ok"]
    second = await worker.pop()
    assert list(second) == [f"{flow}:1"]
    assert second[f"{flow}:1"][0].params == {"x": 2, "seconds": 0.0}  # its input: the result before it
    assert await worker.claim() == {}  # nothing went into a lane
    await pool.publish(keys.wakeup_channel(settings.queue_name), b"mark")  # what comes after the scripts' turns
    assert await next_notice(pubsub) == b"mark"  # no worker was woken, none named
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await worker.events(flow) == [
        ("workflow_started", None),
        ("step_started", 0),
        ("step_ended", 0),
        ("step_started", 1),
    ]


async def test_a_released_step_does_not_overtake_a_job_its_commit_puts_back(pool: ArqRedis, settings: Settings) -> None:
    """A commit that puts a job back in its lane (op R, here after the step's end in the same call) hands no step
    it releases to an idle worker: the step waits behind that job, and the idle worker is named for it."""
    worker, idle = Worker(pool, settings), Worker(pool, settings)
    plain = await Submitter(pool, settings).submit("inc", args=[7])
    flow = await worker.submit({"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}]})
    claimed = await worker.claim()
    assert list(claimed) == [plain, f"{flow}:0"]
    await idle.register()
    put_back = ["R", plain, worker.token, 0, 0, "0", "1", "", ""]  # no events; due again now, its try given back
    assert await worker.commit(worker.end_args(f"{flow}:0", claimed[f"{flow}:0"], 2), put_back) == ["ok", "ok"]
    assert await idle.pop() == {}
    assert list(await idle.claim()) == [plain, f"{flow}:1"]


async def test_a_released_step_does_not_overtake_a_job_its_freed_slot_lets_run(
    pool: ArqRedis, settings: Settings
) -> None:
    """A step's end that frees a concurrency slot lets a parked job run; a step that end releases is not handed to an
    idle worker ahead of it: both wait in their lanes for the named worker's claim."""
    worker, idle = Worker(pool, settings), Worker(pool, settings)
    limited = {"task": "per_customer", "kwargs": {"customer_id": "a"}}  # two at a time per customer
    flow = await worker.submit({"chain": [limited, {"task": "inc"}]})
    submitter = Submitter(pool, settings)
    running = await submitter.submit("per_customer", kwargs={"customer_id": "a"})
    parked = await submitter.submit("per_customer", kwargs={"customer_id": "a"})
    claimed = await worker.claim()
    assert list(claimed) == [f"{flow}:0", running]  # the third waits for a slot
    await idle.register()
    assert await worker.commit(worker.end_args(f"{flow}:0", claimed[f"{flow}:0"], 2)) == ["ok"]
    assert await idle.pop() == {}
    assert sorted(await idle.claim()) == sorted([parked, f"{flow}:1"])


async def test_a_step_released_with_its_lane_holding_a_due_job_is_named(pool: ArqRedis, settings: Settings) -> None:
    """A step whose lane already holds a due job (one waiting for a named worker's claim) goes behind it, and a
    registered worker is named for it (shared/keys.py "Named claims") rather than handed it."""
    worker, idle = Worker(pool, settings), Worker(pool, settings)
    flow = await worker.submit({"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}]})
    first = await worker.claim()
    waiting = await Submitter(pool, settings).submit("inc", args=[7])  # no registered worker: into its lane
    # Registered as a claim whose named job still waits would leave it (a claim here would take the job):
    registration = "9999999999999|5|60000|,default,|,inc,"
    await pool.hset(keys.idle_registry(settings.queue_name), idle.token, registration)  # type: ignore[misc]
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    assert await worker.commit(worker.end_args(f"{flow}:0", first[f"{flow}:0"], 2)) == ["ok"]
    assert await next_notice(pubsub) == b"w" + idle.token.encode()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await idle.pop() == {}
    assert list(await idle.claim()) == [waiting, f"{flow}:1"]


async def test_a_step_an_abort_releases_is_named_too(pool: ArqRedis, settings: Settings) -> None:
    """abort.lua ends a waiting step as its commit would, and may release a successor (here a chord's callback that
    allows failures): its named worker is told (relay_wake sends every named notice of the call), not left to a
    poll while still out of the registry."""
    worker = Worker(pool, settings)
    idle = f"idle:1:{uuid.uuid4().hex[:8]}"
    await register_idle(pool, settings, idle, runs=("tsum",))  # the callback's task only: the member waits
    pubsub = pool.pubsub()
    await pubsub.subscribe(keys.wakeup_channel(settings.queue_name))
    workflow = {"chord": [{"task": "inc", "args": [1]}], "callback": {"task": "tsum"}, "allow_failures": True}
    flow = await worker.submit(workflow)
    assert await next_notice(pubsub) == b"j"  # the member: no registered worker runs it
    # Registered again, running the callback's task under a limit: a limited task is named, never handed off.
    limited = "9999999999999|5|60000|,default,|,!tsum,"
    await pool.hset(keys.idle_registry(settings.queue_name), idle, limited)  # type: ignore[misc]
    assert (await Transitions(pool, Scripts(pool), settings).abort(f"{flow}:0")).outcome == "aborted"
    assert await next_notice(pubsub) == b"w" + idle.encode()  # the callback
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert list(await worker.claim()) == [f"{flow}:1"]


async def _taken(pool: ArqRedis, settings: Settings, worker: Worker, task_id: str, ended: bool) -> list[Any]:
    """A task of the client's own under ``task_id``, waiting or ended; its records as they are then."""
    plain = await Submitter(pool, settings).submit("inc", id=task_id, args=[100], delay_seconds=0 if ended else 600)
    if ended:
        claimed = await worker.claim()
        assert await worker.commit(worker.end_args(plain, claimed[plain], 101)) == ["ok"]
    return [await pool.get(keys.job(plain)), await pool.get(keys.result(plain))]


async def _submit_as(worker: Worker, flow: str, workflow: dict[str, Any]) -> None:
    submission = WorkflowSubmission.model_validate({"workflow": workflow, "id": flow})
    prepared = await prepare_workflow(submission, _shape_of, worker.settings, None)
    assert (await worker.workflows.submit(prepared)).flow_id == flow


async def _shape_of(name: str) -> TaskShape:
    return TASKS.get(name)


@pytest.mark.parametrize("ended", [False, True], ids=["waiting", "ended"])
async def test_a_step_whose_id_a_task_of_the_client_took_fails_and_leaves_that_task_alone(
    pool: ArqRedis, settings: Settings, ended: bool
) -> None:
    """Step n of workflow ``wf`` runs as task ``wf:n``, an id a client may also give a task of its own. The
    release wrote the step's record over that task's (a waiting task became the step; an ended one's result
    stood beside the step's new record): the step now fails, naming why, and the task is left as it was."""
    worker, flow = Worker(pool, settings), f"wf-{uuid.uuid4().hex[:8]}"
    before = await _taken(pool, settings, worker, f"{flow}:1", ended)
    await _submit_as(worker, flow, {"chain": [{"task": "inc", "args": [1]}, {"task": "inc"}, {"task": "inc"}]})
    first = await worker.claim()
    assert list(first) == [f"{flow}:0"]
    assert await worker.commit(worker.end_args(f"{flow}:0", first[f"{flow}:0"], 2)) == ["ok"]
    assert [await pool.get(keys.job(f"{flow}:1")), await pool.get(keys.result(f"{flow}:1"))] == before
    view = await worker.workflows.view(flow)
    assert view is not None
    assert (view["state"], view["error"]["step"], view["error"]["error_type"]) == ("failed", 1, "TaskIdTaken")
    assert view["counts"] == {"succeeded": 1, "failed": 1, "skipped": 1}
    assert await worker.claim() == {}  # nothing of the workflow's runs


async def test_a_map_member_whose_id_is_taken_fails_and_the_others_run(pool: ArqRedis, settings: Settings) -> None:
    worker, flow = Worker(pool, settings), f"wf-{uuid.uuid4().hex[:8]}"
    before = await _taken(pool, settings, worker, f"{flow}:4", ended=False)
    await _submit_as(worker, flow, MAPPED)
    record = (await worker.claim())[f"{flow}:0"]
    assert await worker.commit(worker.end_args(f"{flow}:0", record, [5, 6, 7])) == ["ok"]
    members = await worker.claim()
    assert sorted(members) == [f"{flow}:3", f"{flow}:5"]
    assert [await pool.get(keys.job(f"{flow}:4")), await pool.get(keys.result(f"{flow}:4"))] == before
    for j in (3, 5):
        assert await worker.commit(worker.end_args(f"{flow}:{j}", members[f"{flow}:{j}"], j)) == ["ok"]
    view = await worker.workflows.view(flow)
    assert view is not None
    mapped = view["tree"]["children"][1]
    assert [(c["step"], c["state"]) for c in mapped["children"]] == [(3, "succeeded"), (4, "failed"), (5, "succeeded")]
    assert (view["state"], view["error"]["step"], view["error"]["error_type"]) == ("failed", 4, "TaskIdTaken")


@pytest.mark.parametrize("ended", [False, True], ids=["waiting", "ended"])
async def test_a_workflow_whose_first_step_id_is_taken_is_refused_and_the_task_left_alone(
    pool: ArqRedis, settings: Settings, ended: bool
) -> None:
    """A group's first steps are released by the submit itself: step 1's id taken by the client's own task was
    written over there (only step 0's was checked). The submit is refused, nothing of the workflow is stored."""
    worker, flow = Worker(pool, settings), f"wf-{uuid.uuid4().hex[:8]}"
    before = await _taken(pool, settings, worker, f"{flow}:1", ended)
    with pytest.raises(IdConflict, match="in use"):
        await _submit_as(worker, flow, {"group": [{"task": "inc", "args": [1]}, {"task": "inc", "args": [2]}]})
    assert [await pool.get(keys.job(f"{flow}:1")), await pool.get(keys.result(f"{flow}:1"))] == before
    assert not await pool.exists(keys.flow(flow), keys.job(f"{flow}:0"))


async def test_a_step_released_later_by_a_retry_drops_its_old_result(pool: ArqRedis, settings: Settings) -> None:
    """A workflow retry cleared the old result of the steps it released at once only: a chord's callback released
    when its members ended again kept its failed result beside its new job record, so it read as failed while
    queued (and a cancel took it for finished)."""
    worker = Worker(pool, settings)
    chord = {"chord": [{"task": "inc", "args": [1]}], "callback": {"task": "tsum"}, "allow_failures": True}
    flow = await worker.submit(chord)
    first = await worker.claim()
    assert await worker.commit(worker.end_args(f"{flow}:0", first[f"{flow}:0"], None, RuntimeError("m"))) == ["ok"]
    callback = await worker.claim()
    assert await worker.commit(worker.end_args(f"{flow}:1", callback[f"{flow}:1"], None, RuntimeError("c"))) == ["ok"]
    assert await worker.workflows.retry(flow) == ("queued", None)
    again = await worker.claim()
    seq = int(await pool.get(keys.event_seq(f"{flow}:0")))
    assert await worker.commit(worker.end_args(f"{flow}:0", again[f"{flow}:0"], 2, seq=seq)) == ["ok"]
    assert await pool.hget(keys.flow(flow), "s:1") == b"Q"
    assert await pool.get(keys.result(f"{flow}:1")) is None
    view = await worker.workflows.view(flow)
    assert view is not None
    assert view["tree"]["callback"]["state"] == "queued"
    rerun = await worker.claim()
    assert rerun[f"{flow}:1"].tries_base == 1  # a new round of tries after the first run's one
