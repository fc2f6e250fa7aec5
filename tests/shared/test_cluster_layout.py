"""Relay on a Redis Cluster (issue #22, first phase): every key one script touches shares its namespace's hash tag,
single Redis keeps its key names, and the scripts run on a real local cluster (where they all failed with
CROSSSLOT before: ``relay:queue`` and ``relay:index:relay:queue`` hash to different slots)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable

import pytest
from redis.crc import key_slot

from shared import keys, scripts
from shared.config_errors import Conflict
from shared.enqueue import Enqueuer, prepare
from shared.queuecounts import queue_counts
from shared.redis import close, worker_client
from shared.scripts import Scripts
from shared.settings import Settings
from shared.status import task_view
from shared.tasks import TaskSubmission
from shared.transitions import Transitions
from worker.tasks import load

NAMESPACE = "relay:queue"
# Ids, task names and limit values that hold braces: none may move a key out of its namespace's slot.
AWKWARD = ["plain", "{x}", "a{b}c", "}{", "t~{id}", "tenant~x:1"]

EVERY_KEY: list[Callable[[str], str]] = [
    keys.events_stream,
    keys.event_seq,
    keys.event_bytes,
    keys.reply_request,
    keys.job,
    keys.result,
    keys.in_progress,
    keys.tries,
    keys.claim_request,
    keys.catalogue,
    keys.flow,
    keys.flow_events,
    keys.children,
    lambda v: keys.schedule(NAMESPACE),
    lambda v: keys.abort_set(),
    lambda v: keys.task_index(NAMESPACE),
    lambda v: keys.reply_outbox(NAMESPACE),
    lambda v: keys.fairness(NAMESPACE),
    lambda v: keys.depth(NAMESPACE),
    lambda v: keys.maintenance_lock(NAMESPACE),
    lambda v: keys.worker_presence(NAMESPACE),
    lambda v: keys.flow_index(NAMESPACE),
    lambda v: keys.lane(NAMESPACE, f"{v}|default|0||"),
    lambda v: keys.slots(NAMESPACE, "task", v),
    lambda v: keys.parked(NAMESPACE, "task", v),
    lambda v: keys.rate_limit(NAMESPACE, "task", v),
    lambda v: keys.quota_active(NAMESPACE, "key"),
    lambda v: keys.quota_rate(NAMESPACE, "key"),
]


def test_single_redis_key_names_are_unchanged() -> None:
    """No migration for single Redis and Sentinel: outside cluster mode every name is what it always was."""
    with keys.layout(NAMESPACE, cluster=False):
        assert keys.job("t1") == "arq:job:t1"
        assert keys.task_index(NAMESPACE) == "relay:index:relay:queue"
        assert keys.lane(NAMESPACE, "echo|default|0||") == "relay:lane:echo|default|0|||relay:queue"
        assert keys.schedule(NAMESPACE) == NAMESPACE
        assert keys.abort_set() == "arq:abort"
        assert "{relay:" not in scripts.source("claim")


@pytest.mark.parametrize("value", AWKWARD)
def test_every_key_of_a_namespace_is_in_its_slot_on_a_cluster(value: str) -> None:
    with keys.layout(NAMESPACE, cluster=True):
        slot = key_slot(keys.cluster_tag(NAMESPACE).encode())
        for make in EVERY_KEY:
            key = make(value)
            assert key.startswith("{relay:relay:queue}"), key
            assert key_slot(key.encode()) == slot, key


def test_every_prefix_a_script_builds_keys_from_carries_the_tag() -> None:
    with keys.layout(NAMESPACE, cluster=True):
        source = scripts.source("commit")
    header = [line for line in source.split("-- Now, in ms", 1)[0].splitlines() if line.startswith("local ")]
    literals = re.findall(r"'([^']*)'", "\n".join(header))
    prefixes = [text for text in literals if text != keys.LANE_MARKER]
    assert prefixes
    assert all(text.startswith("{relay:relay:queue}") for text in prefixes), prefixes
    with keys.layout(NAMESPACE, cluster=False):
        assert scripts.source("commit") != source  # compiled per layout, never served from the other's cache


def test_cluster_settings_refuse_what_this_phase_cannot_do() -> None:
    cluster = {"redis_url": "redis://127.0.0.1:7000", "redis_cluster": True}
    with pytest.raises(ValueError, match="SENTINELS"):
        Settings(**cluster, redis_sentinels="127.0.0.1:26379")
    with pytest.raises(ValueError, match="RELAY_QUEUE_NAME"):
        Settings(**cluster, queue_name="a{b}")
    with pytest.raises(ValueError, match="database 0"):
        Settings(redis_url="redis://127.0.0.1:7000/2", redis_cluster=True)
    assert Settings(**cluster, queue_name="team-a:jobs").redis_cluster
    assert Settings(**cluster, redis_wait_replicas=1).redis_wait_replicas == 1  # WAIT goes to the slot's primary
    assert issubclass(Conflict, ValueError)


async def _submit_and_abort(url: str, namespace: str) -> tuple[int, str | None, str | None]:
    settings = Settings(redis_url=url, queue_name=namespace, redis_cluster=True)
    pool = worker_client(settings)
    try:
        registry = load(["worker.tasks.demo"])
        script_set = Scripts(pool)
        submission = TaskSubmission(task="echo", id=f"c-{uuid.uuid4().hex[:8]}", delay_seconds=3600)
        prepared = prepare(registry.get("echo"), settings, submission)
        await Enqueuer(pool, settings, script_set).enqueue(prepared)  # enqueue.lua: CROSSSLOT before the tags
        deferred = (await queue_counts(script_set, namespace)).deferred
        queued = await task_view(pool, namespace, prepared.task_id)  # a pipeline over the task's keys
        await Transitions(pool, script_set, settings).abort(prepared.task_id)
        aborted = await task_view(pool, namespace, prepared.task_id)
        return deferred, queued and queued["state"], aborted and aborted["state"]
    finally:
        await close(pool)


@pytest.mark.cluster
def test_scripts_and_reads_run_on_a_real_cluster(redis_cluster_url: str) -> None:
    """Two namespaces whose tags hash to slots of different primaries (5533 and 2441, of 3 primaries): each one's
    submit, counts, view and abort run in its own slot."""
    for namespace in ("relay:queue", "tenant-c"):
        with keys.layout(namespace, cluster=True):
            assert asyncio.run(_submit_and_abort(redis_cluster_url, namespace)) == (1, "deferred", "aborted")
