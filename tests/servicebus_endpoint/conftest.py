"""Fixtures for driving the local Service Bus endpoint with the real ``azure-servicebus`` SDK.

Each test gets its own endpoint (it starts in milliseconds) and its own SDK client, so no test
can see another's messages; the client is closed before the endpoint stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from azure.servicebus.aio import ServiceBusClient

from bench.harness.servicebus import LocalServiceBus
from tests.servicebus_endpoint.helpers import LOCK_SECONDS, MAX_DELIVERIES


@pytest.fixture
def bus() -> Iterator[LocalServiceBus]:
    with LocalServiceBus(max_delivery_count=MAX_DELIVERIES, lock_duration=LOCK_SECONDS) as endpoint:
        yield endpoint


@pytest.fixture
async def client(bus: LocalServiceBus) -> AsyncIterator[ServiceBusClient]:
    # One retry at most: a protocol mismatch should fail the test now, not after minutes of backoff.
    async with ServiceBusClient.from_connection_string(bus.connection_string, retry_total=1) as sb_client:
        yield sb_client
