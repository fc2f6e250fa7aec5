"""The asyncio client against the real API and worker processes."""

from __future__ import annotations

import asyncio
import signal
import uuid

import httpx
import pytest

from bench.harness.processes import wait_until
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


def counted(client: AsyncClient) -> list[tuple[str, str]]:
    """The requests ``client`` sends from now on, as (method, path), recorded by an httpx event hook."""
    requests: list[tuple[str, str]] = []

    async def record(request: httpx.Request) -> None:
        requests.append((request.method, request.url.path))

    client._http.event_hooks = {"request": [record], "response": []}
    return requests


async def test_run_returns_the_result_in_one_request(relay: str) -> None:
    async with AsyncClient(relay) as client:
        requests = counted(client)
        assert await client.run("echo", "once") == {"echo": "once"}
        assert await client.run("count", n=3, interval=0) == {"count": 3, "sum": 6}
        assert await client.run_with("echo", [], {"message": "wait"}, wait=20) == {"echo": "wait"}
    assert requests == [("POST", "/tasks")] * 3  # the events came back on the submit's own response


async def test_run_raises_what_result_raises(relay: str) -> None:
    async with AsyncClient(relay) as client:
        with pytest.raises(TaskFailed) as failed:
            await client.run("fail", message="as asked")
        with pytest.raises(UnknownTask):
            await client.run("no_such_task")
        with pytest.raises(ResultTimeout) as timed_out:
            await client.run("sleep", seconds=5, steps=1, wait=0.5)
    assert (failed.value.error_type, failed.value.message) == ("DemoFailure", "as asked")
    assert timed_out.value.timeout == 0.5


async def test_run_resumes_a_cut_stream_on_another_api_and_returns_the_result(
    spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": f"relay:client:{uuid.uuid4().hex[:8]}"}
    victim, first = spawn_api(**env)
    _, second = spawn_api(**env)
    spawn_worker(**env)
    task_id = f"run-{uuid.uuid4().hex}"

    def kill_once_running() -> None:
        wait_until(lambda: httpx.get(f"{second}/tasks/{task_id}", timeout=5).json().get("state") == "running", 20,
                   "the task running")  # fmt: skip
        # ... and an event has reached the client (tests/client/test_sync_e2e.py's twin says why)
        wait_until(lambda: b'"seq":' in proxy.delivered[0], 20, "an event sent back to the client")
        proxy.target = address(second)  # the "load balancer" now sends new connections elsewhere
        victim.send(signal.SIGKILL)

    with Forwarder(address(first)) as proxy:
        async with AsyncClient(proxy.url, retry=RetryPolicy(max_wait_seconds=10)) as client:
            requests = counted(client)
            killer = asyncio.create_task(asyncio.to_thread(kill_once_running))
            assert await client.run("count", id=task_id, n=40, interval=0.05) == {"count": 40, "sum": 820}
            await killer
    assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGKILL
    assert requests[0] == ("POST", "/tasks")
    assert set(requests[1:]) == {("GET", f"/tasks/{task_id}/events")}  # resumed, not submitted again
    assert address(second) in proxy.connections[1:]
