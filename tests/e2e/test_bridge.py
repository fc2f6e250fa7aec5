"""The Azure Service Bus bridge against a local Service Bus-compatible endpoint, with the real SDK.

Workers started by ``arq worker.settings`` run the bridge when a Service Bus connection is configured;
an API process on the same Redis and queue is used to read the tasks back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from bench.harness.client import read_events, submit, types, wait_state
from bench.harness.processes import ManagedProcess, free_port, start_redis, wait_until
from bench.harness.servicebus import LocalServiceBus
from shared import keys
from shared.enqueue import enqueue_task
from shared.redis import connect_fail_fast
from shared.settings import Settings
from shared.tasks import TaskSubmission
from tests.conftest import StartApi, StartWorker
from tests.support.metrics import scrape, value
from worker.bridge.messages import sequence_task_id, task_id_for
from worker.bridge.replies import ReplySender
from worker.tasks import load

FINAL = {"succeeded", "failed", "aborted"}


@pytest.fixture
def bus() -> Iterator[LocalServiceBus]:
    with LocalServiceBus(max_delivery_count=5, lock_duration=5.0) as local_bus:
        yield local_bus


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"queue": f"tasks-{tag}", "relay_queue": f"relay:bridge:{tag}", "replies": f"replies-{tag}"}


def bridge_env(bus: LocalServiceBus, names: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "RELAY_QUEUE_NAME": names["relay_queue"],
        "RELAY_SERVICEBUS_CONNECTION_STRING": bus.connection_string,
        "RELAY_SERVICEBUS_QUEUE": names["queue"],
        **extra,
    }


def message_id() -> str:
    return f"msg-{uuid.uuid4().hex}"


def test_messages_become_tasks_and_are_completed(
    bus: LocalServiceBus,
    names: dict[str, str],
    spawn_api: StartApi,
    spawn_worker: StartWorker,
    on_redis: dict[str, str],
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"], **on_redis)
    spawn_worker(**bridge_env(bus, names), **on_redis)
    ids = [message_id() for _ in range(3)]

    async def send() -> None:
        client = ServiceBusClient.from_connection_string(bus.connection_string)
        async with client, client.get_queue_sender(names["queue"]) as sender:
            await sender.send_messages(
                [ServiceBusMessage(json.dumps({"task": "echo", "args": [i]}), message_id=i) for i in ids]
            )

    asyncio.run(send())
    for i in ids:
        final = wait_state(base, i, FINAL)
        assert final["state"] == "succeeded"
        assert final["result"] == {"echo": i}
    wait_until(lambda: set(bus.completed_ids(names["queue"])) == set(ids), 10, "all three completed")
    assert bus.active_count(names["queue"]) == 0
    assert bus.dead_letter_count(names["queue"]) == 0


def test_task_name_may_come_from_an_application_property(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    mid = message_id()
    bus.send(
        names["queue"], b'{"kwargs": {"n": 2, "interval": 0}}', message_id=mid, application_properties={"task": "count"}
    )
    assert wait_state(base, mid, FINAL)["result"] == {"count": 2, "sum": 3}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "InvalidJson"),
        (b"[1, 2, 3]", "InvalidSchema"),
        (b'{"task": "echo", "surprise": true}', "InvalidSchema"),
        (b'{"task": "no_such_task"}', "UnknownTask"),
        (b'{"task": "sleep", "kwargs": {"seconds": "long"}}', "InvalidArguments"),
        (b'{"task": "echo", "kwargs": {"message": "' + b"x" * 20_000 + b'"}}', "ArgsTooLarge"),
    ],
)
def test_poison_messages_are_dead_lettered_with_a_reason(
    bus: LocalServiceBus,
    names: dict[str, str],
    spawn_api: StartApi,
    spawn_worker: StartWorker,
    body: bytes,
    reason: str,
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    mid = message_id()
    bus.send(names["queue"], body, message_id=mid)
    wait_until(lambda: bus.dead_letter_count(names["queue"]) == 1, 15, "the message to be dead-lettered")
    dead = bus.dead_letters(names["queue"])[0]
    assert dead.message_id == mid
    assert dead.dead_letter_reason == reason
    assert dead.dead_letter_error_description
    assert dead.delivery_count <= 1  # dead-lettered at once, not retried
    assert bus.active_count(names["queue"]) == 0
    assert httpx.get(f"{base}/tasks/{mid}", timeout=5).status_code == 404  # no task came of it


def test_duplicate_delivery_is_one_task(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    mid = message_id()
    body = b'{"task": "count", "kwargs": {"n": 2, "interval": 0}}'
    bus.send(names["queue"], body, message_id=mid)
    bus.send(names["queue"], body, message_id=mid)  # Service Bus delivers at least once
    spawn_worker(**bridge_env(bus, names))
    wait_until(lambda: bus.completed_ids(names["queue"]) == [mid, mid], 15, "both deliveries completed")
    assert wait_state(base, mid, FINAL)["state"] == "succeeded"
    assert types(read_events(base, mid)).count("started") == 1


def test_redis_down_abandons_then_succeeds_once_redis_is_back(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker, tmp_path: Path
) -> None:
    port = free_port()
    server, url = start_redis(tmp_path, port, appendonly=True)
    worker = spawn_worker(url=url, **bridge_env(bus, names, RELAY_SERVICEBUS_RETRY_SECONDS="0.5"))
    server.stop()
    mid = message_id()
    bus.send(names["queue"], b'{"task": "echo", "args": ["back"]}', message_id=mid)

    try:
        wait_until(lambda: f"abandoning message {mid}" in worker.output(), 20, "an abandon while Redis is down")
        wait_until(lambda: "the bridge stops receiving" in worker.output(), 20, "the bridge to stop receiving")
        assert bus.completed_ids(names["queue"]) == []
        assert bus.dead_letter_count(names["queue"]) == 0
        server, _ = start_redis(tmp_path, port, appendonly=True)
        _, base = spawn_api(url=url, RELAY_QUEUE_NAME=names["relay_queue"])
        assert wait_state(base, mid, FINAL, timeout=30)["result"] == {"echo": "back"}
        wait_until(lambda: bus.completed_ids(names["queue"]) == [mid], 15, "the message to be completed")
        assert bus.dead_letter_count(names["queue"]) == 0
    finally:
        worker.stop()
        server.stop()


@pytest.mark.parametrize(
    ("refuse", "accept"),
    [
        pytest.param(("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "SET", "maxmemory", "0"), id="out-of-memory"),
        pytest.param(("REPLICAOF", "127.0.0.1", "1"), ("REPLICAOF", "NO", "ONE"), id="readonly-replica"),
    ],
)
def test_a_redis_that_refuses_writes_abandons_then_succeeds_once_it_accepts(
    spawn_redis: Callable[..., tuple[ManagedProcess, str]],  # first: stopped after the processes using it
    bus: LocalServiceBus,
    names: dict[str, str],
    spawn_api: StartApi,
    spawn_worker: StartWorker,
    refuse: tuple[str, ...],
    accept: tuple[str, ...],
) -> None:
    """OOM and READONLY (a failover's demoted primary) are transient like a Redis that is down: the message is
    abandoned (redelivered later), never dead-lettered, and becomes its one task once writes work again."""
    _, url = spawn_redis()
    client = redis.Redis.from_url(url)
    try:
        _, base = spawn_api(url=url, RELAY_QUEUE_NAME=names["relay_queue"])
        worker = spawn_worker(url=url, **bridge_env(bus, names, RELAY_SERVICEBUS_RETRY_SECONDS="0.5"))
        client.execute_command(*refuse)
        # A message without an id: its redelivery must become the same task (entity + sequence number), not two.
        number = bus.send(names["queue"], b'{"task": "echo", "args": ["no id"]}')
        wait_until(lambda: "abandoning message None" in worker.output(), 20, "an abandon while Redis refuses writes")
        assert bus.completed_ids(names["queue"]) == []
        assert bus.dead_letter_count(names["queue"]) == 0
        client.execute_command(*accept)
        task_id = sequence_task_id(names["queue"], number)
        assert wait_state(base, task_id, FINAL, timeout=30)["result"] == {"echo": "no id"}
        wait_until(lambda: len(bus.completed_ids(names["queue"])) == 1, 15, "the message to be completed")
        assert bus.dead_letter_count(names["queue"]) == 0
        assert types(read_events(base, task_id)).count("started") == 1
    finally:
        client.close()


def test_a_full_queue_stops_receiving_until_it_has_room_and_dead_letters_nothing(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """A full queue is transient too, but Redis accepts writes all along: the probe that ends a Redis outage let
    the abandoned message straight back, to be refused and abandoned again, until Service Bus dead-lettered it (5
    deliveries in about 2 s here). Now receiving waits for the queue to have room."""
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"], RELAY_MAX_QUEUE_DEPTH="1")
    worker = spawn_worker(**bridge_env(bus, names, RELAY_MAX_QUEUE_DEPTH="1", RELAY_SERVICEBUS_RETRY_SECONDS="0.5"))
    filler = submit(base, {"task": "echo", "delay_seconds": 600})  # waits: the queue's one place
    assert filler.status_code == 202, filler.text
    mid = message_id()
    bus.send(names["queue"], b'{"task": "echo", "args": ["room"], "delay_seconds": 1}', message_id=mid)
    wait_until(lambda: "is full: the bridge stops receiving" in worker.output(), 20, "the bridge to stop receiving")
    assert bus.completed_ids(names["queue"]) == []
    assert bus.dead_letter_count(names["queue"]) == 0
    assert httpx.delete(f"{base}/tasks/{filler.json()['id']}", timeout=10).status_code == 200  # room again
    assert wait_state(base, mid, FINAL, timeout=30)["result"] == {"echo": "room"}
    wait_until(lambda: bus.completed_ids(names["queue"]) == [mid], 15, "the message to be completed")
    assert bus.dead_letter_count(names["queue"]) == 0


def test_replicas_that_lag_stop_receiving_until_they_confirm_and_dead_letter_nothing(
    spawn_redis: Callable[..., tuple[ManagedProcess, str]],  # first: stopped after the processes using it
    bus: LocalServiceBus,
    names: dict[str, str],
    spawn_api: StartApi,
    spawn_worker: StartWorker,
) -> None:
    """``RELAY_REDIS_WAIT_REPLICAS`` with no replica to confirm: ``NotReplicated`` was neither transient nor
    poison, so it tore the receiver down (every message of the batch left unsettled) again and again. Now the
    message is abandoned and receiving waits until a replica confirms writes."""
    _, url = spawn_redis()
    _, base = spawn_api(url=url, RELAY_QUEUE_NAME=names["relay_queue"])
    wanted = {"RELAY_REDIS_WAIT_REPLICAS": "1", "RELAY_REDIS_WAIT_TIMEOUT_MS": "100"}
    worker = spawn_worker(url=url, **bridge_env(bus, names, RELAY_SERVICEBUS_RETRY_SECONDS="0.5", **wanted))
    mid = message_id()
    bus.send(names["queue"], b'{"task": "echo", "args": ["replicated"]}', message_id=mid)
    lagging = "replicas lag: the bridge stops receiving"
    wait_until(lambda: lagging in worker.output(), 20, "the bridge to stop receiving")
    assert bus.completed_ids(names["queue"]) == []
    _, replica_url = spawn_redis()
    replica = redis.Redis.from_url(replica_url)
    try:
        primary = redis.Redis.from_url(url).connection_pool.connection_kwargs
        replica.execute_command("REPLICAOF", primary["host"], primary["port"])
        wait_until(lambda: bus.completed_ids(names["queue"]) == [mid], 30, "the message to be completed")
    finally:
        replica.execute_command("REPLICAOF", "NO", "ONE")
        replica.close()
    assert wait_state(base, mid, FINAL, timeout=30)["result"] == {"echo": "replicated"}
    assert bus.dead_letter_count(names["queue"]) == 0
    assert "Service Bus receiver failed" not in worker.output()


def test_sigterm_mid_batch_loses_nothing(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    ids = [message_id() for _ in range(40)]
    for i in ids:
        bus.send(names["queue"], b'{"task": "sleep", "kwargs": {"seconds": 0.3, "steps": 1}}', message_id=i)
    first = spawn_worker(**bridge_env(bus, names, RELAY_WORKER_GRACE_SECONDS="1"))
    wait_until(lambda: len(bus.completed_ids(names["queue"])) >= 5, 20, "the batch to be under way")
    first.send(signal.SIGTERM)
    assert first.wait(30) == 0, first.output()
    assert "Traceback" not in first.output()
    spawn_worker(**bridge_env(bus, names))
    for i in ids:
        assert wait_state(base, i, FINAL, timeout=40)["state"] == "succeeded"
        assert types(read_events(base, i)).count("end") == 1
    wait_until(lambda: bus.active_count(names["queue"]) + bus.locked_count(names["queue"]) == 0, 20, "an empty queue")
    assert sorted(set(bus.completed_ids(names["queue"]))) == sorted(ids)
    assert bus.dead_letter_count(names["queue"]) == 0


def test_reply_to_gets_the_outcome(
    bus: LocalServiceBus, names: dict[str, str], spawn_worker: StartWorker, on_redis: dict[str, str]
) -> None:
    spawn_worker(**bridge_env(bus, names), **on_redis)
    mid = message_id()

    async def request_and_wait() -> tuple[str | None, dict[str, object]]:
        async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
            async with client.get_queue_sender(names["queue"]) as sender:
                await sender.send_messages(
                    ServiceBusMessage(
                        json.dumps({"task": "count", "kwargs": {"n": 3, "interval": 0}}),
                        message_id=mid,
                        reply_to=names["replies"],
                    )
                )
            async with client.get_queue_receiver(names["replies"], max_wait_time=20) as receiver:
                replies = await receiver.receive_messages(max_message_count=1, max_wait_time=20)
                assert replies, "no reply arrived"
                await receiver.complete_message(replies[0])
                return replies[0].correlation_id, json.loads(b"".join(replies[0].body))

    correlation_id, outcome = asyncio.run(request_and_wait())
    assert correlation_id == mid
    assert outcome == {"task_id": mid, "state": "succeeded", "result": {"count": 3, "sum": 6}}


def test_bridge_is_off_without_configuration(spawn_worker: StartWorker) -> None:
    worker: ManagedProcess = spawn_worker(RELAY_QUEUE_NAME=f"relay:nobridge:{uuid.uuid4().hex[:6]}")
    assert "Service Bus bridge" not in worker.output()


@pytest.mark.parametrize("with_id", [True, False], ids=["message-id", "no-message-id"])
def test_bridge_killed_between_enqueue_and_complete_runs_the_task_once(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker, with_id: bool
) -> None:
    """A redelivery of a message whose task was enqueued is the same task, also for a message without an id
    (its task id comes from the entity and the broker's sequence number, which a redelivery keeps)."""
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    bus.create_queue(names["queue"], lock_duration=2.0)
    bus.hold_settlements()  # the bridge's "complete" will be in flight, unanswered
    victim = spawn_worker(**bridge_env(bus, names))
    mid = message_id() if with_id else None
    number = bus.send(names["queue"], b'{"task": "count", "kwargs": {"n": 2, "interval": 0}}', message_id=mid)
    task_id = mid if mid is not None else sequence_task_id(names["queue"], number)
    wait_until(lambda: bus.held_settlements() == 1, 20, "the bridge to enqueue and send its complete")
    assert wait_state(base, task_id, FINAL)["state"] == "succeeded"
    victim.send(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    bus.hold_settlements(False)
    spawn_worker(**bridge_env(bus, names))  # the lock runs out; Service Bus redelivers the message
    wait_until(lambda: bus.completed_ids(names["queue"]) == [mid], 30, "the redelivered message to be completed")
    assert types(read_events(base, task_id)).count("started") == 1  # nothing new was enqueued
    listed = httpx.get(f"{base}/tasks", params={"task": "count"}, timeout=10).json()["tasks"]
    assert [t["id"] for t in listed] == [task_id]  # and no second task under another id
    assert bus.dead_letter_count(names["queue"]) == 0


def test_messages_without_an_id_are_three_tasks_not_one(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    # Other SDKs and raw AMQP senders may set no message id; each such message is still its own task.
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    sequence = [bus.send(names["queue"], json.dumps({"task": "echo", "args": [f"body {i}"]})) for i in range(3)]
    for i, number in enumerate(sequence):
        task_id = sequence_task_id(names["queue"], number)
        assert wait_state(base, task_id, FINAL)["result"] == {"echo": f"body {i}"}
    wait_until(lambda: len(bus.completed_ids(names["queue"])) == 3, 10, "all three completed")
    assert bus.dead_letter_count(names["queue"]) == 0


def test_a_message_id_with_a_trailing_newline_is_a_task_not_poison(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    bus.send(names["queue"], json.dumps({"task": "echo", "args": ["nl"]}), message_id="order-1\n")
    task_id = task_id_for("order-1\n")
    assert task_id.startswith("sb-")  # not a valid id as it is, so it is digested, never half-matched
    assert wait_state(base, task_id, FINAL)["result"] == {"echo": "nl"}
    assert bus.dead_letter_count(names["queue"]) == 0


async def _receive(bus: LocalServiceBus, queue: str, wait: float) -> list[dict[str, object]]:
    client = ServiceBusClient.from_connection_string(bus.connection_string)
    async with client, client.get_queue_receiver(queue, max_wait_time=wait) as receiver:
        got = await receiver.receive_messages(max_message_count=5, max_wait_time=wait)
        for message in got:
            await receiver.complete_message(message)
        return [{"correlation_id": m.correlation_id, **json.loads(b"".join(m.body))} for m in got]


def test_a_conflicting_message_cannot_redirect_a_tasks_reply(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    mid, hijack = message_id(), f"{names['replies']}-hijack"
    first = json.dumps({"task": "sleep", "kwargs": {"seconds": 1, "steps": 1}})
    bus.send(names["queue"], first, message_id=mid, reply_to=names["replies"])
    wait_state(base, mid, {"running", "succeeded"})
    other = json.dumps({"task": "echo", "args": ["other"]})
    bus.send(names["queue"], other, message_id=mid, reply_to=hijack)
    wait_until(lambda: bus.dead_letter_count(names["queue"]) == 1, 20, "the conflicting message dead-lettered")
    assert bus.dead_letters(names["queue"])[0].dead_letter_reason == "IdConflict"
    replies = asyncio.run(_receive(bus, names["replies"], 20))
    assert [(r["correlation_id"], r["state"]) for r in replies] == [(mid, "succeeded")]
    assert asyncio.run(_receive(bus, hijack, 2)) == []  # before the fix, the reply went here


def test_a_task_aborted_while_it_waits_still_replies(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    mid = message_id()
    body = json.dumps({"task": "echo", "delay_seconds": 600})
    bus.send(names["queue"], body, message_id=mid, reply_to=names["replies"])
    wait_state(base, mid, {"deferred"})
    assert httpx.delete(f"{base}/tasks/{mid}", timeout=10).status_code == 200
    replies = asyncio.run(_receive(bus, names["replies"], 20))
    assert [(r["correlation_id"], r["state"]) for r in replies] == [(mid, "aborted")]
    assert replies[0]["error"] == {"error_type": "Aborted", "message": "aborted before it started"}


def test_a_failed_task_replies_and_replies_again_after_a_manual_retry(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    mid = message_id()
    bus.send(
        names["queue"],
        json.dumps({"task": "fail", "kwargs": {"message": "boom"}}),
        message_id=mid,
        reply_to=names["replies"],
    )
    first = asyncio.run(_receive(bus, names["replies"], 20))
    failure = ("DemoFailure", "boom")
    assert [(r["correlation_id"], r["state"], _type_and_message(r["error"])) for r in first] == [
        (mid, "failed", failure)
    ]
    assert httpx.post(f"{base}/tasks/{mid}/retry", timeout=10).status_code == 202
    second = asyncio.run(_receive(bus, names["replies"], 20))  # the retried run ends: its reply goes out too
    assert [(r["correlation_id"], r["state"], _type_and_message(r["error"])) for r in second] == [
        (mid, "failed", failure)
    ]
    assert wait_state(base, mid, FINAL)["tries"] == 2


def _type_and_message(error: object) -> tuple[object, object]:
    """An error's type and message (a task's own failure carries its traceback too)."""
    assert isinstance(error, dict)
    return error["error_type"], error["message"]


def test_a_task_out_of_tries_still_replies(
    bus: LocalServiceBus,
    names: dict[str, str],
    spawn_api: StartApi,
    spawn_worker: StartWorker,
    redis_client: redis.Redis,
) -> None:
    """One of the worker's own exits: a job picked up as often as allowed (its workers were lost every time)
    fails without running, and its reply goes out like any other outcome's."""
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    mid = message_id()
    bus.send(
        names["queue"], json.dumps({"task": "echo", "delay_seconds": 600}), message_id=mid, reply_to=names["replies"]
    )
    wait_state(base, mid, {"deferred"})
    redis_client.set(keys.tries(mid), 5)  # RELAY_MAX_PICKUPS pickups already used by lost workers
    redis_client.zadd(names["relay_queue"], {mid: int(time.time() * 1000)})
    redis_client.publish(keys.wakeup_channel(names["relay_queue"]), b"j")
    replies = asyncio.run(_receive(bus, names["replies"], 20))
    assert [(r["correlation_id"], r["state"]) for r in replies] == [(mid, "failed")]
    assert replies[0]["error"]["error_type"] == "TriesExhausted"


def test_a_reply_that_cannot_be_sent_waits_in_redis_until_it_can(
    names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker, redis_client: redis.Redis
) -> None:
    first = LocalServiceBus(max_delivery_count=5, lock_duration=5.0).start()
    port = first.port
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(first, names))
    mid = message_id()
    body = json.dumps({"task": "sleep", "kwargs": {"seconds": 2, "steps": 1}})
    first.send(names["queue"], body, message_id=mid, reply_to=names["replies"])
    wait_state(base, mid, {"running"})
    first.stop()  # Service Bus is unreachable when the task ends: the reply cannot go out
    outbox = keys.reply_outbox(names["relay_queue"])
    assert wait_state(base, mid, FINAL)["state"] == "succeeded"
    wait_until(lambda: redis_client.zscore(outbox, mid) is not None, 10, "the reply to wait in the outbox")
    with LocalServiceBus(port=port, max_delivery_count=5, lock_duration=5.0) as second:
        replies = asyncio.run(_receive(second, names["replies"], 60))
        assert [(r["correlation_id"], r["state"]) for r in replies] == [(mid, "succeeded")]
        wait_until(lambda: redis_client.zscore(outbox, mid) is None, 10, "the sent reply to leave the outbox")


def test_a_reply_whose_task_expired_before_it_could_be_sent_is_dropped_with_a_warning(
    bus: LocalServiceBus,
    names: dict[str, str],
    spawn_api: StartApi,
    spawn_worker: StartWorker,
    redis_client: redis.Redis,
) -> None:
    # No bridge worker runs from the task's end until its records have expired (they live
    # RELAY_RESULT_TTL_SECONDS): the reply cannot go out in time, and the next bridge worker says so.
    ttl = {"RELAY_RESULT_TTL_SECONDS": "2"}
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"], **ttl)
    receiver = spawn_worker(**bridge_env(bus, names, **ttl))
    mid = message_id()
    bus.send(
        names["queue"], json.dumps({"task": "echo", "delay_seconds": 2}), message_id=mid, reply_to=names["replies"]
    )
    wait_until(lambda: bus.completed_ids(names["queue"]) == [mid], 20, "the message to become a task")
    receiver.stop()
    spawn_worker(RELAY_QUEUE_NAME=names["relay_queue"], **ttl)  # runs it, but sends no replies (no Service Bus)
    outbox = keys.reply_outbox(names["relay_queue"])
    wait_until(lambda: redis_client.zscore(outbox, mid) is not None, 10, "the reply to wait in the outbox")
    wait_until(lambda: httpx.get(f"{base}/tasks/{mid}", timeout=10).status_code == 404, 10, "its records to expire")
    sender = spawn_worker(**bridge_env(bus, names, **ttl))
    wait_until(lambda: redis_client.zscore(outbox, mid) is None, 15, "the expired reply to leave the outbox")
    wait_until(lambda: f"reply for task {mid} dropped" in sender.output(), 10, "a warning naming the task")
    line = next(line for line in sender.output().splitlines() if f"reply for task {mid} dropped" in line)
    assert " WARNING relay.bridge: " in line
    assert "expired" in line  # why: what it would have said is gone


def test_a_messages_traceparent_is_carried_into_its_tasks_events(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    spawn_worker(**bridge_env(bus, names))
    mid = message_id()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    bus.send(names["queue"], b'{"task": "echo"}', message_id=mid, application_properties={"traceparent": traceparent})
    assert wait_state(base, mid, FINAL)["state"] == "succeeded"
    events = read_events(base, mid)
    assert {e["trace_id"] for e in events} == {"4bf92f3577b34da6a3ce929d0e0e4736"}


def test_the_bridge_counts_what_it_received_completed_and_dead_lettered(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"])
    port = free_port()
    spawn_worker(**bridge_env(bus, names, RELAY_WORKER_METRICS_PORT=str(port)))
    good = [message_id() for _ in range(2)]
    for mid in good:
        bus.send(names["queue"], b'{"task": "echo"}', message_id=mid)
    bus.send(names["queue"], b"{not json", message_id=message_id())
    bus.send(names["queue"], b'{"task": "no_such_task"}', message_id=message_id())
    for mid in good:
        wait_state(base, mid, FINAL)
    wait_until(lambda: bus.dead_letter_count(names["queue"]) == 2, 15, "both poison messages dead-lettered")
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "relay_bridge_messages_received_total") == 4
    assert value(samples, "relay_bridge_messages_completed_total") == 2
    assert value(samples, "relay_bridge_messages_dead_lettered_total", reason="InvalidJson") == 1
    assert value(samples, "relay_bridge_messages_dead_lettered_total", reason="UnknownTask") == 1
    assert value(samples, "relay_bridge_messages_abandoned_total") == 0


def test_messages_belong_to_the_bridge_tenant(
    bus: LocalServiceBus, names: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    keys = "billing:billing-bus-key,ci:ci-bus-key"
    _, base = spawn_api(RELAY_QUEUE_NAME=names["relay_queue"], RELAY_API_KEYS=keys)
    spawn_worker(**bridge_env(bus, names, RELAY_BRIDGE_TENANT="billing"))
    mid = message_id()

    async def request_and_wait() -> dict[str, object]:
        async with ServiceBusClient.from_connection_string(bus.connection_string) as client:
            async with client.get_queue_sender(names["queue"]) as sender:
                body = json.dumps({"task": "echo", "args": ["for billing"]})
                await sender.send_messages(ServiceBusMessage(body, message_id=mid, reply_to=names["replies"]))
            async with client.get_queue_receiver(names["replies"], max_wait_time=20) as receiver:
                replies = await receiver.receive_messages(max_message_count=1, max_wait_time=20)
                assert replies, "no reply arrived"
                await receiver.complete_message(replies[0])
                outcome: dict[str, object] = json.loads(b"".join(replies[0].body))
                return outcome

    assert asyncio.run(request_and_wait())["task_id"] == mid  # the id the sender chose, not its stored form
    billing = httpx.get(f"{base}/tasks/{mid}", headers={"X-API-Key": "billing-bus-key"}, timeout=10).json()
    assert (billing["id"], billing["tenant"], billing["result"]) == (mid, "billing", {"echo": "for billing"})
    assert httpx.get(f"{base}/tasks/{mid}", headers={"X-API-Key": "ci-bus-key"}, timeout=10).status_code == 404


def test_a_reply_obeys_the_result_limit(bus: LocalServiceBus, names: dict[str, str], spawn_worker: StartWorker) -> None:
    """A task whose result is over RELAY_MAX_RESULT_BYTES fails (issue #27): its reply says so, in a few
    hundred bytes, rather than carrying the result."""
    spawn_worker(**bridge_env(bus, names, RELAY_MAX_RESULT_BYTES="4096"))
    mid = message_id()
    body = json.dumps({"task": "big_result", "kwargs": {"size_bytes": 5000}})
    bus.send(names["queue"], body, message_id=mid, reply_to=names["replies"])
    replies = asyncio.run(_receive(bus, names["replies"], 30))
    assert [(r["correlation_id"], r["state"]) for r in replies] == [(mid, "failed")]
    error = replies[0]["error"]
    assert isinstance(error, dict)
    assert error["error_type"] == "ResultTooLarge"
    assert "RELAY_MAX_RESULT_BYTES" in error["message"]
    assert len(json.dumps(replies[0])) < 4096


@pytest.mark.cluster
def test_replies_come_from_every_shards_outbox(
    bus: LocalServiceBus, names: dict[str, str], redis_cluster_url: str, spawn_worker: StartWorker
) -> None:
    """One queue over three cluster slots (``RELAY_QUEUE_SHARDS=3``): each task's reply is put in its own shard's
    outbox, and the bridge sends the replies of every shard's."""
    shards = 3
    cluster = {"url": redis_cluster_url, "RELAY_REDIS_CLUSTER": "true", "RELAY_QUEUE_SHARDS": str(shards)}
    spawn_worker(**bridge_env(bus, names), **cluster)
    mids: list[str] = []
    while {keys.shard_of(m, shards) for m in mids} != set(range(shards)) or len(mids) < 2 * shards:
        mids.append(message_id())  # random ids until every shard has at least one (message ids are task ids)
    for i, mid in enumerate(mids):
        body = json.dumps({"task": "echo", "args": [f"m{i}"]})
        bus.send(names["queue"], body, message_id=mid, reply_to=names["replies"])
    replies: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    while len(replies) < len(mids) and time.monotonic() < deadline:
        replies += asyncio.run(_receive(bus, names["replies"], 5))
    assert sorted(str(r["correlation_id"]) for r in replies) == sorted(mids)
    assert {r["state"] for r in replies} == {"succeeded"}


def test_a_retry_that_ends_while_the_first_reply_is_sent_gets_its_own_reply(
    redis_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """The sender removed the outbox entry once its send returned, whatever happened meanwhile: a manual retry's
    run that ended during the send had added the entry again, and its reply was lost."""
    queue = f"relay:rr:{uuid.uuid4().hex[:8]}"
    _, base = spawn_api(RELAY_QUEUE_NAME=queue)
    spawn_worker(RELAY_QUEUE_NAME=queue)  # runs the task; sends no replies (no Service Bus)
    settings = Settings(redis_url=redis_url, queue_name=queue)
    task_id = f"rr-{uuid.uuid4().hex}"
    sent: list[bytes] = []

    class Sender:
        async def send_messages(self, message: ServiceBusMessage) -> None:
            sent.append(b"".join(message.body))
            if len(sent) == 1:  # while the first reply is on its way, the task is retried and ends again
                retried = await asyncio.to_thread(httpx.post, f"{base}/tasks/{task_id}/retry", timeout=10)
                assert retried.status_code == 202, retried.text
                view = await asyncio.to_thread(wait_state, base, task_id, {"failed"}, 30)
                assert view["tries"] == 2

    class Client:
        @contextlib.asynccontextmanager
        async def get_queue_sender(self, name: str) -> AsyncIterator[Sender]:
            yield Sender()

    async def scenario() -> None:
        pool = await connect_fail_fast(settings)
        try:
            submission = TaskSubmission(task="fail", kwargs={"message": "boom"}, id=task_id)
            reply = {"reply_to": "replies", "session_id": None, "message_id": task_id}
            await enqueue_task(pool, load(["worker.tasks.demo"]), settings, submission, reply=reply)
            await asyncio.to_thread(wait_state, base, task_id, {"failed"}, 30)
            sender = ReplySender(pool, Client(), queue, settings.max_result_bytes)  # type: ignore[arg-type]
            await sender.send_due()  # the first reply, and the retry during it
            await sender.send_due()  # the retry's
        finally:
            await pool.aclose()

    asyncio.run(scenario())
    assert len(sent) == 2
