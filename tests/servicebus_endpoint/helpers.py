"""Helpers for tests that drive the local endpoint with the SDK: receive N, poll, open together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusReceiver

LOCK_SECONDS = 5.0  # the default lock of the per-test endpoint
MAX_DELIVERIES = 3  # the default delivery limit of the per-test endpoint


@asynccontextmanager
async def opened(*handlers: Any) -> AsyncIterator[None]:
    """Open SDK senders/receivers together and close them together.

    Each SDK handler spends about half a second opening (CBS handshake, attach) and closing (its
    keep-alive task), all client-side; overlapping them keeps the suite fast.
    """
    await asyncio.gather(*(handler.__aenter__() for handler in handlers))
    try:
        yield
    finally:
        await asyncio.gather(*(handler.close() for handler in handlers))


async def receive(receiver: ServiceBusReceiver, count: int, timeout: float = 10.0) -> list[ServiceBusReceivedMessage]:
    """Receive exactly ``count`` messages, or fail once ``timeout`` seconds have passed."""
    received: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + timeout
    while len(received) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"received {len(received)} of {count} messages in {timeout}s"
        batch = await receiver.receive_messages(max_message_count=count - len(received), max_wait_time=remaining)
        received.extend(batch)
    return received


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` (say, a count on the endpoint) until true, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


def body_of(message: ServiceBusReceivedMessage) -> bytes:
    """The payload of a data-section message, however many sections the SDK yields."""
    return b"".join(message.body)
