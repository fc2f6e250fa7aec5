"""Lock renewal (manual and AutoLockRenewer), lock expiry and lost locks."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient
from azure.servicebus.exceptions import MessageLockLostError

from bench.harness.servicebus import LocalServiceBus
from tests.servicebus_endpoint.helpers import eventually, receive


def seconds_until(moment: datetime.datetime) -> float:
    return (moment - datetime.datetime.now(datetime.UTC)).total_seconds()


async def test_renew_message_lock_extends_locked_until(bus: LocalServiceBus, client: ServiceBusClient) -> None:
    bus.create_queue("tasks", lock_duration=1.0)
    bus.send("tasks", b"x", message_id="m1")
    async with client.get_queue_receiver("tasks") as receiver:
        [message] = await receive(receiver, 1)
        first_expiry = message.locked_until_utc
        await asyncio.sleep(0.3)  # let time pass so the renewed expiry is measurably later
        renewed = await receiver.renew_message_lock(message)
        assert renewed == message.locked_until_utc
        assert (renewed - first_expiry).total_seconds() >= 0.25

        await eventually(lambda: seconds_until(first_expiry) < -0.2, "the original lock to run out")
        assert (bus.locked_count("tasks"), bus.active_count("tasks")) == (1, 0)  # still held
        await receiver.complete_message(message)
    assert bus.completed_ids("tasks") == ["m1"]


async def test_auto_lock_renewer_holds_a_message_past_its_lock_duration(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    # 1.5 s is the shortest lock the SDK's renewer keeps reliably: it checks once a second and
    # renews when 0.75 s (half the lock, rounded down to whole seconds, times 0.75) remain.
    bus.create_queue("tasks", lock_duration=1.5)
    bus.send("tasks", b"slow", message_id="m1")
    renewer = AutoLockRenewer(max_lock_renewal_duration=30)
    async with client.get_queue_receiver("tasks", auto_lock_renewer=renewer) as receiver:
        [message] = await receive(receiver, 1)
        first_expiry = message.locked_until_utc
        await asyncio.sleep(3.2)  # a slow handler, over twice the lock duration
        assert message.locked_until_utc > first_expiry
        assert (bus.locked_count("tasks"), bus.active_count("tasks")) == (1, 0)
        await receiver.complete_message(message)
    await renewer.close()
    assert bus.completed_ids("tasks") == ["m1"]


async def test_an_expired_lock_redelivers_with_delivery_count_plus_one(
    bus: LocalServiceBus, client: ServiceBusClient
) -> None:
    bus.create_queue("tasks", lock_duration=0.5)
    bus.send("tasks", b"x", message_id="m1")
    async with client.get_queue_receiver("tasks") as receiver:
        [first] = await receive(receiver, 1)
        assert first.delivery_count == 0
        [again] = await receive(receiver, 1, timeout=5)  # never settled: comes back once the lock runs out
        assert (again.message_id, again.delivery_count) == ("m1", 1)
        assert again.lock_token != first.lock_token

        with pytest.raises(MessageLockLostError):
            await receiver.renew_message_lock(first)  # the broker refuses the stale lock token
        await receiver.complete_message(again)
    assert bus.completed_ids("tasks") == ["m1"]
