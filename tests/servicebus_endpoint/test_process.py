"""The endpoint as its own process: it keeps its state when an SDK client is SIGKILLed mid-message."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from azure.servicebus.aio import ServiceBusClient

from bench.harness.processes import ManagedProcess
from tests.servicebus_endpoint.helpers import eventually, receive

# Sends one message, takes it under a peek-lock, reports the lock and then hangs, holding it.
HOLDING_CLIENT = """
import asyncio, sys
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

async def main(connection_string):
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        sender, receiver = client.get_queue_sender("tasks"), client.get_queue_receiver("tasks")
        await asyncio.gather(sender.__aenter__(), receiver.__aenter__())
        await sender.send_messages(ServiceBusMessage(b"work", message_id="m1"))
        [message] = await receiver.receive_messages(max_message_count=1, max_wait_time=10)
        print("HOLDING", message.message_id, message.delivery_count, flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


def ready_connection_string(process: ManagedProcess) -> str | None:
    for line in process.output().splitlines():
        if line.startswith("READY "):
            return line.removeprefix("READY ").strip()
    return None


async def test_a_killed_client_loses_its_lock_and_the_message_is_redelivered(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench.harness.servicebus", "--port", "0", "--lock-duration", "1"]
    bus = ManagedProcess("servicebus", argv, dict(os.environ), tmp_path)
    holder: ManagedProcess | None = None
    try:
        await eventually(lambda: ready_connection_string(bus) is not None, "the endpoint's READY line")
        connection_string = ready_connection_string(bus)
        assert connection_string is not None
        assert "UseDevelopmentEmulator=true" in connection_string

        holder = ManagedProcess(
            "holder", [sys.executable, "-c", HOLDING_CLIENT, connection_string], dict(os.environ), tmp_path
        )
        await eventually(lambda: "HOLDING m1 0" in holder.output(), "the client to hold the message", timeout=20)
        holder.send(signal.SIGKILL)
        assert holder.wait(5) == -signal.SIGKILL

        client = ServiceBusClient.from_connection_string(connection_string, retry_total=1)
        async with client, client.get_queue_receiver("tasks") as receiver:
            [message] = await receive(receiver, 1, timeout=10)  # back once the dead client's lock runs out
            assert (message.message_id, message.delivery_count) == ("m1", 1)
            await receiver.complete_message(message)
            assert await receiver.receive_messages(max_wait_time=0.3) == []

        bus.send(signal.SIGTERM)
        assert bus.wait(10) == 0, bus.output()
        assert "Traceback" not in bus.output()
    finally:
        if holder is not None:
            holder.stop()
        bus.stop()
