"""The API's copy of the task catalogue (``shared.catalogue``) against a real Redis: a submit answers from the copy
while it is read again in the background, a copy too old is read before answering, and a name the copy does not
know is read again before it is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shared import catalogue, presence
from shared.catalogue import MAX_STALE_SECONDS, REFRESH_SECONDS, Catalogue, TaskOffer
from shared.errors import InvalidArguments, UnknownTask
from worker.context import TaskContext
from worker.registry import TaskDefinitionError, TaskRegistry


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def task(name: str, description: str = "") -> dict[str, Any]:
    schema = {"type": "object", "properties": {"message": {"type": "string"}}, "additionalProperties": False}
    return {"name": name, "description": description, "schema": schema, "timeout_seconds": 30.0}


async def offer(redis: Redis, queue: str, *tasks: dict[str, Any]) -> None:
    """Publish ``tasks`` as one live worker's catalogue, as a worker does."""
    digest, body = catalogue.encode(list(tasks))
    await catalogue.store(redis, digest, body)
    seconds, micros = await redis.time()
    await presence.publish(redis, queue, "worker-1", {"catalogue": digest}, seconds * 1000 + micros / 1000)


async def test_a_submit_answers_from_the_copy_while_it_is_read_again(redis: Redis) -> None:
    queue, clock = f"relay:cat:{uuid.uuid4().hex[:8]}", Clock()
    await offer(redis, queue, task("echo", "first"))
    cat = Catalogue(redis, queue, clock)
    assert (await cat.get("echo")).description == "first"  # the first read happens before the answer
    await offer(redis, queue, task("echo", "second"))

    gate = asyncio.Event()
    real_records = presence.records

    async def held(*args: Any) -> Any:
        await gate.wait()
        return await real_records(*args)

    clock.now += REFRESH_SECONDS + 0.5
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(presence, "records", held)
        answered = await asyncio.wait_for(cat.get("echo"), 5)  # does not wait for the held read
        assert answered.description == "first"
        refresher = cat._refresher
        assert refresher is not None
        assert not refresher.done()
        gate.set()
        await refresher
    assert (await cat.get("echo")).description == "second"
    await cat.close()


async def test_a_copy_older_than_the_bound_is_read_before_answering(redis: Redis) -> None:
    queue, clock = f"relay:cat:{uuid.uuid4().hex[:8]}", Clock()
    await offer(redis, queue, task("echo", "first"))
    cat = Catalogue(redis, queue, clock)
    await cat.get("echo")
    await offer(redis, queue, task("echo", "second"))
    clock.now += MAX_STALE_SECONDS + 0.5  # no request for a while
    assert (await cat.get("echo")).description == "second"
    await cat.close()


async def test_a_name_the_copy_does_not_know_is_read_again_before_it_is_refused(redis: Redis) -> None:
    queue, clock = f"relay:cat:{uuid.uuid4().hex[:8]}", Clock()
    await offer(redis, queue, task("echo"))
    cat = Catalogue(redis, queue, clock)
    await cat.get("echo")
    await offer(redis, queue, task("echo"), task("resize"))  # a worker that has just started
    clock.now += 0.2  # the copy is fresh: only the unknown name makes it read again
    assert (await cat.get("resize")).name == "resize"
    clock.now += 0.2
    with pytest.raises(UnknownTask):
        await cat.get("nothing")
    await cat.close()


@pytest.mark.parametrize(
    ("seen_ago", "offered"), [(catalogue.STALE_SECONDS - 1, True), (catalogue.STALE_SECONDS + 1, False)]
)
async def test_a_worker_offers_its_tasks_until_its_record_is_stale_on_redis_time(
    redis: Redis, seen_ago: float, offered: bool
) -> None:
    """A stopped worker's offers stay STALE_SECONDS after its last record (a rolling deploy's gap refuses no submit),
    counted on Redis's clock; then its tasks are refused (tests/e2e/test_claim_filter.py ages a real one's)."""
    queue = f"relay:cat:{uuid.uuid4().hex[:8]}"
    digest, body = catalogue.encode([task("resize")])
    await catalogue.store(redis, digest, body)
    seconds, micros = await redis.time()
    seen_ms = seconds * 1000 + micros / 1000 - seen_ago * 1000
    await presence.publish(redis, queue, "worker-1", {"catalogue": digest, "stopped": True}, seen_ms)
    cat = Catalogue(redis, queue, Clock())
    if offered:
        assert (await cat.get("resize")).name == "resize"
    else:
        with pytest.raises(UnknownTask):
            await cat.get("resize")
    await cat.close()


async def test_an_offer_with_a_timeout_no_submit_can_use_fails_no_submit(redis: Redis) -> None:
    """A worker of RELAY_JOB_TIMEOUT_SECONDS=inf published "timeout_seconds": null (msgspec writes inf so), and every
    submit of its tasks to a sound API was a 500 (float(None)). Such a timeout is no bound: the API's own applies;
    and an entry that cannot be read at all leaves its task unknown, not the catalogue unreadable."""
    queue = f"relay:cat:{uuid.uuid4().hex[:8]}"
    unbounded = [task("inf"), task("none"), task("neg"), task("word"), task("missing")]
    for entry, timeout in zip(unbounded, [float("inf"), None, -1, "soon"], strict=False):
        entry["timeout_seconds"] = timeout
    del unbounded[-1]["timeout_seconds"]
    broken = {"name": "broken", "timeout_seconds": 30.0}  # no schema
    await offer(redis, queue, *unbounded, broken, task("echo"), {"name": 5})
    cat = Catalogue(redis, queue, Clock())
    for entry in unbounded:
        got = await cat.get(entry["name"])
        assert (got.timeout_seconds, got.max_timeout(300.0)) == (None, 300.0)
    assert (await cat.get("echo")).max_timeout(300.0) == 30.0
    with pytest.raises(UnknownTask):
        await cat.get("broken")
    await cat.close()


def test_an_integer_a_float_cannot_hold_is_refused_for_a_number() -> None:
    schema = {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "y": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
        },
    }
    add = TaskOffer("add", "", schema, ("x", "y"), 30.0, 0)
    assert add.validate([10**308], {}) == {"x": 10**308, "y": None}
    with pytest.raises(InvalidArguments) as caught:
        add.validate([10**400], {})
    assert caught.value.errors == [
        {"loc": ["x"], "msg": "an integer too large for a number (at most about 1.8e308)", "type": "type"}
    ]
    with pytest.raises(InvalidArguments) as caught:
        add.validate([1, -(10**400)], {})
    assert caught.value.errors == [
        {"loc": ["y"], "msg": "an integer of 401 digits is not valid under any of the given schemas", "type": "anyOf"}
    ]


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 0, 31 * 24 * 3600])
def test_a_task_cannot_have_a_timeout_no_worker_may(timeout: float) -> None:
    # A task's own timeout is what its workers publish (TaskSpec.describe): inf reached the API as null.
    with pytest.raises(TaskDefinitionError, match=r"timeout_seconds must be positive, at most 2592000 \(30 days\)"):

        @TaskRegistry().task(timeout_seconds=timeout)
        def slow(task: TaskContext) -> None: ...
