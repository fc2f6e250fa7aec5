"""Sending (single and batched) and peek-lock receiving through the real SDK."""

from __future__ import annotations

import datetime
import time
import uuid

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from bench.harness.servicebus import LocalServiceBus
from tests.servicebus_endpoint.helpers import LOCK_SECONDS, body_of, opened, receive


async def test_single_message_keeps_its_properties_and_gets_broker_annotations(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    before = datetime.datetime.now(datetime.UTC)
    sender, receiver = client.get_queue_sender("tasks"), client.get_queue_receiver("tasks")
    async with opened(sender, receiver):
        await sender.send_messages(
            ServiceBusMessage(
                b'{"task":"echo"}',
                message_id="m1",
                application_properties={"kind": "echo", "attempt": 7},
                reply_to="replies",
                correlation_id="c1",
                session_id="s1",
                subject="subj",
                content_type="application/json",
            )
        )
        assert bus.active_count("tasks") == 1

        [message] = await receive(receiver, 1)
        assert body_of(message) == b'{"task":"echo"}'
        assert message.message_id == "m1"
        assert message.application_properties == {b"kind": b"echo", b"attempt": 7}
        assert (message.reply_to, message.correlation_id, message.session_id) == ("replies", "c1", "s1")
        assert (message.subject, message.content_type) == ("subj", "application/json")
        assert message.delivery_count == 0
        assert message.sequence_number == 1
        assert isinstance(message.lock_token, uuid.UUID)
        assert message.enqueued_time_utc is not None
        assert before - datetime.timedelta(seconds=1) <= message.enqueued_time_utc <= message.locked_until_utc
        lock_left = (message.locked_until_utc - datetime.datetime.now(datetime.UTC)).total_seconds()
        assert 0 < lock_left <= LOCK_SECONDS
        assert (bus.active_count("tasks"), bus.locked_count("tasks")) == (0, 1)

        await receiver.complete_message(message)

    assert (bus.active_count("tasks"), bus.locked_count("tasks")) == (0, 0)
    assert bus.completed_ids("tasks") == ["m1"]


async def test_a_list_arrives_as_one_batch_and_is_split_in_order(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    sender, receiver = client.get_queue_sender("tasks"), client.get_queue_receiver("tasks")
    async with opened(sender, receiver):
        await sender.send_messages(
            [
                ServiceBusMessage(b"one", message_id="b1", application_properties={"n": 1}),
                ServiceBusMessage("two", message_id="b2", application_properties={"n": 2}),
                ServiceBusMessage(b"three", message_id="b3", application_properties={"n": 3}),
            ]
        )
        assert [(m.message_id, m.body, m.properties) for m in bus.peek("tasks")] == [
            ("b1", b"one", {"n": 1}),
            ("b2", b"two", {"n": 2}),
            ("b3", b"three", {"n": 3}),
        ]

        messages = await receive(receiver, 3)
        assert [(m.message_id, body_of(m), m.sequence_number) for m in messages] == [
            ("b1", b"one", 1),
            ("b2", b"two", 2),
            ("b3", b"three", 3),
        ]
        assert len({m.lock_token for m in messages}) == 3
        for message in messages:
            await receiver.complete_message(message)
    assert bus.completed_ids("tasks") == ["b1", "b2", "b3"]


async def test_receive_on_an_empty_queue_returns_nothing_after_max_wait_time(client: ServiceBusClient) -> None:
    async with client.get_queue_receiver("nothing-here") as receiver:
        started = time.monotonic()
        assert await receiver.receive_messages(max_message_count=5, max_wait_time=0.5) == []
        assert time.monotonic() - started < 3


async def test_message_injected_through_the_python_api_reaches_the_sdk(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    bus.send(
        "tasks",
        body=b'{"task":"echo"}',
        message_id="inj-1",
        application_properties={"tenant": "t1"},
        reply_to="replies",
        correlation_id="corr-1",
    )
    async with client.get_queue_receiver("tasks") as receiver:
        [message] = await receive(receiver, 1)
        assert body_of(message) == b'{"task":"echo"}'
        assert (message.message_id, message.reply_to, message.correlation_id) == ("inj-1", "replies", "corr-1")
        assert message.application_properties == {b"tenant": b"t1"}
        assert message.delivery_count == 0
        await receiver.complete_message(message)
    assert bus.completed_ids("tasks") == ["inj-1"]


async def test_request_reply_over_queues_created_on_first_use(bus: LocalServiceBus, client: ServiceBusClient) -> None:
    bus.create_queue("requests", max_delivery_count=5, lock_duration=10.0)
    reply_queue = f"replies-{uuid.uuid4().hex[:8]}"
    caller_out, caller_in = client.get_queue_sender("requests"), client.get_queue_receiver(reply_queue)
    worker_in, worker_out = client.get_queue_receiver("requests"), client.get_queue_sender(reply_queue)
    async with opened(caller_out, caller_in, worker_in, worker_out):
        await caller_out.send_messages(ServiceBusMessage(b"ping", message_id="req-1", reply_to=reply_queue))

        [request] = await receive(worker_in, 1)
        assert request.reply_to == reply_queue
        await worker_out.send_messages(ServiceBusMessage(b"pong", correlation_id=request.message_id))
        await worker_in.complete_message(request)

        [reply] = await receive(caller_in, 1)
        assert (body_of(reply), reply.correlation_id) == (b"pong", "req-1")
        await caller_in.complete_message(reply)
    assert bus.completed_ids("requests") == ["req-1"]
    assert (bus.active_count(reply_queue), bus.locked_count(reply_queue)) == (0, 0)
