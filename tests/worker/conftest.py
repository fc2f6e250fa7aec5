"""Fixtures of the worker tests that run an engine against the suite's own real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    """An arq client of the suite's Redis, closed after the test."""
    client = ArqRedis.from_url(redis_url)
    yield client
    await client.aclose()
