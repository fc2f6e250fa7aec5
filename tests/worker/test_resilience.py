"""The arq wrappers give back what an interrupted pickup took, and swallow only Redis failures."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import ConnectionError, WatchError

from worker.resilience import survive_pickup_errors, survive_poll_errors


def fake_worker() -> Any:
    return SimpleNamespace(job_counter=0, sem=asyncio.Semaphore(2))


async def test_interrupted_pickup_gives_its_slot_back() -> None:
    async def start_jobs(self: Any, job_ids: list[bytes]) -> None:
        await self.sem.acquire()  # what arq does before its WATCH block...
        self.job_counter += 1
        raise WatchError("A ConnectionError occurred on while watching one or more keys")  # ...inside it

    worker = fake_worker()
    await survive_pickup_errors(start_jobs)(worker, [b"job"])
    assert worker.job_counter == 0
    assert worker.sem._value == 2


async def test_poll_survives_redis_errors_but_not_bugs() -> None:
    async def redis_down(self: Any) -> None:
        raise ConnectionError("Connection lost")

    async def bug(self: Any) -> None:
        raise KeyError("not Redis")

    await survive_poll_errors(redis_down)(fake_worker())
    with pytest.raises(KeyError):
        await survive_poll_errors(bug)(fake_worker())
