"""The asyncio client against the real API and worker processes."""

from __future__ import annotations

import asyncio
import signal
import uuid

import pytest

from relay.client import (
    AsyncClient,
    ErrorInfo,
    NotAbortable,
    ResultTimeout,
    RetryPolicy,
    TaskAborted,
    TaskFailed,
    TaskNotFound,
    UnknownTask,
)
from tests.conftest import StartApi, StartWorker
from tests.support.forwarder import Forwarder, address


async def test_submit_then_result_and_state(relay: str) -> None:
    async with AsyncClient(relay) as client:
        handle = await client.submit("echo", message="async hi")
        assert await handle.result(timeout=20) == {"echo": "async hi"}
        view = await handle.state()
        celery = await client.task("echo").delay("sugar")
        assert await celery.get(timeout=20) == {"echo": "sugar"}
    assert view.state == "succeeded"
    assert view.result == {"echo": "async hi"}


async def test_events_and_resume_from_a_seq(relay: str) -> None:
    async with AsyncClient(relay) as client:
        handle = await client.submit("count", n=3, interval=0)
        events = [e async for e in handle.events()]
        later = [e.seq async for e in handle.events(after=4)]
    assert [e.type for e in events] == ["started", "partial", "partial", "partial", "result", "end"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.data for e in events[1:4]] == [{"i": 1}, {"i": 2}, {"i": 3}]
    assert later == [5, 6]


async def test_failure_raises_task_failed(relay: str) -> None:
    async with AsyncClient(relay) as client:
        handle = await client.submit("fail", message="async failure")
        with pytest.raises(TaskFailed) as caught:
            await handle.result(timeout=20)
        view = await handle.state()
        with pytest.raises(UnknownTask):
            await client.submit("no_such_task")
        with pytest.raises(TaskNotFound):
            await client.get("never-submitted")
    assert (caught.value.error_type, caught.value.message) == ("DemoFailure", "async failure")
    assert view.error == ErrorInfo("DemoFailure", "async failure")


async def test_abort_and_result_timeout(relay: str) -> None:
    async with AsyncClient(relay) as client:
        handle = await client.submit("sleep", seconds=30, steps=30)
        with pytest.raises(ResultTimeout):
            await handle.result(timeout=0.3)
        async for event in handle.events():
            if event.type == "progress":
                break
        assert (await handle.state()).state == "running"  # the timeout did not stop it
        assert await handle.cancel() == "aborting"
        with pytest.raises(TaskAborted):
            await handle.result(timeout=20)
        with pytest.raises(NotAbortable):
            await handle.cancel()


async def test_events_resume_on_another_api_after_sigkill(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": f"relay:client:{uuid.uuid4().hex[:8]}"}
    victim, first = spawn_api(**env)
    _, second = spawn_api(**env)
    spawn_worker(**env)
    seqs: list[int] = []
    with Forwarder(address(first)) as proxy:
        async with AsyncClient(proxy.url, retry=RetryPolicy(max_wait_seconds=10)) as client:
            handle = await client.submit("count", n=40, interval=0.05)
            async for event in handle.events():
                seqs.append(event.seq)
                if len(seqs) == 5:
                    proxy.target = address(second)
                    victim.send(signal.SIGKILL)
                    assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGKILL
    assert seqs == list(range(1, 44))
    assert address(second) in proxy.connections[1:]
