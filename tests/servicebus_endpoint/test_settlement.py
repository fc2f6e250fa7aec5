"""Complete, abandon and dead-letter through the SDK, over the receive link and over $management."""

from __future__ import annotations

import pytest
from azure.servicebus import ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import MessageLockLostError

from bench.harness.servicebus import LocalServiceBus
from tests.servicebus_endpoint.helpers import MAX_DELIVERIES, body_of, eventually, opened, receive


async def test_abandon_redelivers_with_delivery_count_plus_one(bus: LocalServiceBus, client: ServiceBusClient) -> None:
    bus.send("tasks", b'{"task":"echo"}', message_id="m1", application_properties={"k": "v"})
    async with client.get_queue_receiver("tasks") as receiver:
        [first] = await receive(receiver, 1)
        await receiver.abandon_message(first)
        assert (bus.active_count("tasks"), bus.locked_count("tasks")) == (1, 0)

        [second] = await receive(receiver, 1)
        assert (second.message_id, second.delivery_count) == ("m1", 1)
        assert body_of(second) == b'{"task":"echo"}'  # the data section survives redelivery
        assert second.application_properties == {b"k": b"v"}
        assert second.lock_token != first.lock_token
        await receiver.complete_message(second)
    assert bus.completed_ids("tasks") == ["m1"]


async def test_dead_letter_is_readable_from_the_dead_letter_sub_queue(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    bus.send("tasks", b"poison", message_id="m1", correlation_id="c1")
    receiver = client.get_queue_receiver("tasks")
    dead_letter_receiver = client.get_queue_receiver("tasks", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    async with opened(receiver, dead_letter_receiver):
        [message] = await receive(receiver, 1)
        await receiver.dead_letter_message(message, reason="BadInput", error_description="not JSON")
        assert (bus.active_count("tasks"), bus.dead_letter_count("tasks")) == (0, 1)
        [stored] = bus.dead_letters("tasks")
        assert (stored.message_id, stored.body) == ("m1", b"poison")
        assert (stored.dead_letter_reason, stored.dead_letter_error_description) == ("BadInput", "not JSON")

        [dead] = await receive(dead_letter_receiver, 1)
        assert (dead.message_id, dead.correlation_id, body_of(dead)) == ("m1", "c1", b"poison")
        assert (dead.dead_letter_reason, dead.dead_letter_error_description) == ("BadInput", "not JSON")
        await dead_letter_receiver.complete_message(dead)
    assert bus.dead_letter_count("tasks") == 0
    assert bus.completed_ids("tasks") == []


async def test_exceeding_max_delivery_count_dead_letters_the_message(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    bus.send("tasks", b"flaky", message_id="m1")
    receiver = client.get_queue_receiver("tasks")
    dead_letter_receiver = client.get_queue_receiver("tasks", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    async with opened(receiver, dead_letter_receiver):
        for attempt in range(MAX_DELIVERIES):
            [message] = await receive(receiver, 1)
            assert message.delivery_count == attempt
            await receiver.abandon_message(message)
        assert (bus.active_count("tasks"), bus.dead_letter_count("tasks")) == (0, 1)
        assert await receiver.receive_messages(max_wait_time=0.5) == []

        [dead] = await receive(dead_letter_receiver, 1)
        assert (dead.message_id, dead.delivery_count) == ("m1", MAX_DELIVERIES)
        assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
        assert dead.dead_letter_error_description
        await dead_letter_receiver.complete_message(dead)


async def test_settlement_over_the_management_link(bus: LocalServiceBus, client: ServiceBusClient) -> None:
    # The SDK falls back to com.microsoft:update-disposition when the receive link cannot confirm a
    # settlement; its own request builder is called here so that path is exercised deterministically.
    for message_id in ("done", "retry", "poison"):
        bus.send("tasks", b"x", message_id=message_id)
    async with client.get_queue_receiver("tasks") as receiver:
        done, retry, poison = await receive(receiver, 3)
        await receiver._settle_message_via_mgmt_link("completed", [done.lock_token])
        await receiver._settle_message_via_mgmt_link("abandoned", [retry.lock_token])
        details = {"deadletter-reason": "Manual", "deadletter-description": "via mgmt"}
        await receiver._settle_message_via_mgmt_link("suspended", [poison.lock_token], dead_letter_details=details)

        assert bus.locked_count("tasks") == 0
        assert bus.completed_ids("tasks") == ["done"]
        assert [(m.message_id, m.delivery_count) for m in bus.peek("tasks")] == [("retry", 1)]
        [dead] = bus.dead_letters("tasks")
        assert (dead.message_id, dead.dead_letter_reason, dead.dead_letter_error_description) == (
            "poison",
            "Manual",
            "via mgmt",
        )
        with pytest.raises(MessageLockLostError):  # settled already: the token is gone
            await receiver._settle_message_via_mgmt_link("completed", [done.lock_token])


async def test_prefetched_messages_released_on_close_cost_no_delivery(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    bus.create_queue("tasks", lock_duration=30.0)  # a slow SDK drain must not be mistaken for a release
    for message_id in ("first", "second", "third"):
        bus.send("tasks", b"x", message_id=message_id)
    async with client.get_queue_receiver("tasks", prefetch_count=10) as receiver:
        [first] = await receive(receiver, 1)
        await eventually(lambda: bus.locked_count("tasks") == 3, "the prefetch to lock every message")
        await receiver.complete_message(first)
    # Closing drains the link and releases what was prefetched but never handed out.
    await eventually(lambda: bus.locked_count("tasks") == 0, "the prefetched messages to be released")
    assert [(m.message_id, m.delivery_count) for m in bus.peek("tasks")] == [("second", 0), ("third", 0)]
