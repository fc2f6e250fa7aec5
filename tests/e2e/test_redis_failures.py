"""A real API against a real redis-server that misbehaves: each failure is a JSON 503 with its own code and
Retry-After on the routes it affects (never a 500), reads keep working where Redis allows them, and
everything works again once Redis does, without restarting anything."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bench.harness.client import ndjson_lines, submit_ok
from bench.harness.processes import ManagedProcess, free_port, wait_until
from bench.harness.redis_servers import Server, start_server
from tests.conftest import StartApi, StartWorker
from tests.support.tcp_proxy import SilencingProxy

NDJSON = {"Accept": "application/x-ndjson"}


@dataclass
class Stack:
    server: Server
    api: ManagedProcess
    base: str
    admin: redis.Redis
    task_id: str  # a queued task (no worker runs), for the read routes


@pytest.fixture
def stack(tmp_path: Path, spawn_api: StartApi) -> Iterator[Stack]:
    server = start_server(tmp_path, name="flaky")
    api, base = spawn_api(url=server.url)
    admin = server.client()
    try:
        yield Stack(server, api, base, admin, submit_ok(base, {"task": "echo"}))
    finally:
        admin.close()
        api.stop()
        server.proc.stop()


def submit(base: str) -> httpx.Response:
    return httpx.post(f"{base}/tasks", json={"task": "echo"}, timeout=10)


def get(base: str, task_id: str) -> httpx.Response:
    return httpx.get(f"{base}/tasks/{task_id}", timeout=10)


def events_status(base: str, task_id: str) -> tuple[int, dict[str, object] | None, dict[str, str]]:
    """Status, JSON error body (if any) and headers of ``GET /events``, without reading a live stream to its end."""
    with httpx.stream("GET", f"{base}/tasks/{task_id}/events", headers=NDJSON, timeout=10) as response:
        body = json.loads(response.read()) if response.status_code != 200 else None
        return response.status_code, body, dict(response.headers)


def assert_503(response: httpx.Response, code: str, retry_after: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert response.headers["retry-after"] == retry_after


def assert_events_503(stack: Stack, code: str, retry_after: str) -> None:
    status, body, headers = events_status(stack.base, stack.task_id)
    assert status == 503
    assert body is not None
    assert body["error"]["code"] == code  # type: ignore[index]
    assert headers["retry-after"] == retry_after


def assert_recovers(stack: Stack) -> None:
    assert submit(stack.base).status_code == 202
    assert get(stack.base, stack.task_id).status_code == 200
    assert "unhandled error" not in stack.api.output()  # what a 500 logs


def test_out_of_memory_refuses_submits_but_not_reads(stack: Stack) -> None:
    stack.admin.config_set("maxmemory-policy", "noeviction")
    stack.admin.config_set("maxmemory", 1)
    try:
        assert_503(submit(stack.base), "redis_oom", "10")
        assert get(stack.base, stack.task_id).status_code == 200
        assert events_status(stack.base, stack.task_id)[0] == 200  # replay and follow only read
        # Aborting a waiting task frees memory: Redis runs a script whose first write frees memory whole, even
        # at maxmemory, so the abort is done completely (never half: the task reads as aborted).
        aborted = httpx.delete(f"{stack.base}/tasks/{stack.task_id}", timeout=10)
        assert (aborted.status_code, aborted.json()["state"]) == (200, "aborted")
        assert get(stack.base, stack.task_id).json()["state"] == "aborted"
    finally:
        stack.admin.config_set("maxmemory", 0)
    assert_recovers(stack)


def test_readonly_replica_refuses_submits_but_not_reads(stack: Stack) -> None:
    stack.admin.replicaof("127.0.0.1", str(free_port()))  # what a demoted primary does in a failover
    try:
        assert_503(submit(stack.base), "redis_readonly", "1")
        assert get(stack.base, stack.task_id).status_code == 200
    finally:
        stack.admin.replicaof("NO", "ONE")
    assert_recovers(stack)


def test_replica_without_its_primary_refuses_everything(stack: Stack) -> None:
    stack.admin.config_set("replica-serve-stale-data", "no")
    stack.admin.replicaof("127.0.0.1", str(free_port()))
    try:
        assert_503(submit(stack.base), "redis_masterdown", "2")
        assert_503(get(stack.base, stack.task_id), "redis_masterdown", "2")
        assert_events_503(stack, "redis_masterdown", "2")
    finally:
        stack.admin.replicaof("NO", "ONE")
    assert_recovers(stack)


def test_long_script_makes_redis_busy_for_every_route(stack: Stack) -> None:
    stack.admin.config_set("busy-reply-threshold", 100)  # ms (lua-time-limit before Redis 7)
    script_client = stack.server.client()
    script_client.connection_pool.connection_kwargs["socket_timeout"] = None
    outcome: list[str] = []

    def run_forever() -> None:
        try:
            script_client.eval("while true do end", 0)
        except redis.ResponseError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=run_forever)
    thread.start()
    probe = stack.server.client()
    try:

        def busy() -> bool:
            try:
                probe.ping()
            except redis.ResponseError as exc:
                return str(exc).startswith("BUSY")
            return False

        wait_until(busy, 10, "Redis to answer BUSY")
        assert_503(submit(stack.base), "redis_busy", "2")
        assert_503(get(stack.base, stack.task_id), "redis_busy", "2")
        assert_events_503(stack, "redis_busy", "2")
        ready = httpx.get(f"{stack.base}/health/ready", timeout=10)
        assert ready.status_code == 503
        assert httpx.get(f"{stack.base}/health/live", timeout=10).status_code == 200
    finally:
        probe.script_kill()
        thread.join(10)
        probe.close()
        script_client.close()
    assert "killed" in outcome[0]
    assert_recovers(stack)


def test_flushed_scripts_are_reloaded_without_an_error(stack: Stack) -> None:
    assert submit(stack.base).status_code == 202  # the enqueue script is loaded now
    stack.admin.script_flush()
    assert submit(stack.base).status_code == 202


def test_redis_loading_its_data_answers_503_loading(tmp_path: Path, spawn_api: StartApi) -> None:
    """A restarted Redis answers LOADING until its dataset is in memory; ``key-load-delay`` (a Redis
    debugging option) stretches a small dataset's load to seconds so the test can see it."""
    port = free_port()
    server = start_server(tmp_path, port=port, name="loading")
    api, base = spawn_api(url=server.url)
    admin = server.client()
    loading: Server | None = None
    try:
        task_id = submit_ok(base, {"task": "echo"})
        admin.eval("for i = 1, 20000 do redis.call('SET', 'filler:' .. i, 'x') end", 0)
        admin.save()
        admin.close()
        server.proc.stop()
        loading = start_server(
            tmp_path,
            "--key-load-delay",
            "500",
            "--loading-process-events-interval-bytes",
            "1024",
            port=port,
            name="loading",
        )
        probe = loading.client()

        def is_loading() -> bool:
            try:
                probe.ping()
            except redis.BusyLoadingError:
                return True
            except redis.ConnectionError:
                return False
            return False

        assert is_loading(), "the dataset loaded too fast to observe"
        assert_503(submit(base), "redis_loading", "5")
        assert_503(get(base, task_id), "redis_loading", "5")
        with httpx.stream("GET", f"{base}/tasks/{task_id}/events", headers=NDJSON, timeout=10) as response:
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
        assert httpx.get(f"{base}/health/ready", timeout=10).status_code == 503
        probe.close()
    finally:
        if loading is not None:
            loading.proc.send(signal.SIGKILL)  # no need to wait for the load to end
            loading.proc.stop()
        api.stop()
        server.proc.stop()


def test_a_hub_connection_gone_silent_is_found_and_replaced(
    redis_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """The API's pub/sub connection stops carrying bytes without being closed (a flow a NAT or load balancer
    dropped; new connections work): the hub heard nothing, and every stream waited 5 s for a confirmation and
    failed with a 500, for hours. Now a stream that cannot subscribe is a 503, the hub's probe finds the silent
    connection and replaces it, and streams follow running tasks again."""
    proxy = SilencingProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    try:
        queue = f"relay:silent:{uuid.uuid4().hex[:8]}"
        spawn_worker(RELAY_QUEUE_NAME=queue)  # straight to Redis: tasks run whatever the API's connections do
        _, base = spawn_api(url=f"redis://127.0.0.1:{proxy.port}/0", RELAY_QUEUE_NAME=queue)
        assert proxy.silence() > 0
        statuses: list[int] = []
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 90
        while not events and time.monotonic() < deadline:
            # A task that runs for 10 s: its stream needs a live subscription, not only the log.
            submitted = httpx.post(
                f"{base}/tasks", json={"task": "count", "kwargs": {"n": 20, "interval": 0.5}}, timeout=30
            )
            statuses.append(submitted.status_code)
            if submitted.status_code != 202:
                continue  # a pooled connection that was silenced: a 503, and it is dropped
            path = f"{base}/tasks/{submitted.json()['id']}/events"
            with httpx.stream("GET", path, headers={"Accept": "application/x-ndjson"}, timeout=30) as response:
                statuses.append(response.status_code)
                if response.status_code == 200:
                    events = list(ndjson_lines(response))
        assert 500 not in statuses, statuses
        assert set(statuses) <= {200, 202, 503}, statuses
        assert events, statuses
        assert events[-1]["type"] == "end"
        assert [e["data"]["i"] for e in events if e["type"] == "partial"] == list(range(1, 21))  # none missed
    finally:
        proxy.close()
