"""Bounds that hold under abuse: open streams per API process, and the size of a task's arguments
(so a full queue is refused before Redis is full). Real API processes and real redis-servers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable

import httpx
import redis

from bench.harness.client import submit, submit_ok
from bench.harness.processes import ManagedProcess, wait_until
from shared import keys, lanes
from shared.limits import args_bytes
from shared.tasks import TaskSubmission
from tests.conftest import StartApi


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def error(response: httpx.Response) -> dict[str, object]:
    body: dict[str, object] = response.json()["error"]
    return body


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_open_streams_per_process_are_capped(spawn_api: StartApi, redis_client: redis.Redis) -> None:
    queue = unique("q")
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, RELAY_MAX_STREAMS="2")
    waiting = [submit_ok(base, {"task": "echo", "delay_seconds": 600}) for _ in range(3)]
    with contextlib.ExitStack() as open_streams:
        for task_id in waiting[:2]:
            stream = open_streams.enter_context(httpx.stream("GET", f"{base}/tasks/{task_id}/events", timeout=10))
            assert stream.status_code == 200
        refused = httpx.get(f"{base}/tasks/{waiting[2]}/events", timeout=10)
        assert (refused.status_code, error(refused)["code"]) == (503, "too_many_streams")
        assert refused.headers["retry-after"] == "2"
        assert "RELAY_MAX_STREAMS" in str(error(refused)["message"])

        # A submit that asks for its events on the response is refused before it enqueues anything...
        depth = redis_client.zcard(keys.lane(queue, lanes.lane_id("echo", "default", 0, None)))
        streamed = httpx.post(
            f"{base}/tasks", json={"task": "echo"}, headers={"Accept": "application/x-ndjson"}, timeout=10
        )
        assert (streamed.status_code, error(streamed)["code"]) == (503, "too_many_streams")
        assert redis_client.zcard(keys.lane(queue, lanes.lane_id("echo", "default", 0, None))) == depth
        # ...while a plain submit, which opens no stream, is still accepted.
        assert submit(base, {"task": "echo", "delay_seconds": 600}).status_code == 202

        assert metric(base, "relay_streams_open") == 2
        assert metric(base, "relay_streams_max") == 2
        assert metric(base, "relay_streams_refused_total") == 2

    wait_until(lambda: metric(base, "relay_streams_open") == 0, 10, "the closed streams to be noticed")
    with httpx.stream("GET", f"{base}/tasks/{waiting[2]}/events", timeout=10) as stream:
        assert stream.status_code == 200  # a freed slot is usable again
    for task_id in waiting:
        httpx.delete(f"{base}/tasks/{task_id}", timeout=10)


def echo_with_args_of(size: int) -> dict[str, object]:
    """An ``echo`` submission whose JSON-encoded arguments are exactly ``size`` bytes."""
    overhead = args_bytes(TaskSubmission(task="echo", kwargs={"message": ""}))
    body: dict[str, object] = {"task": "echo", "kwargs": {"message": "x" * (size - overhead)}, "delay_seconds": 600}
    assert args_bytes(TaskSubmission.model_validate(body)) == size
    return body


def test_args_limit_refuses_before_a_small_redis_fills(
    spawn_api: StartApi, spawn_redis: Callable[..., tuple[ManagedProcess, str]]
) -> None:
    """8 MB of Redis: without the limit, the 500 KB submits below fill it after about 15 (then Redis
    refuses every write: a 500 here, and a stalled system). The arguments limit refuses each of them;
    the largest allowed arguments fill the queue (depth 200) while Redis still has room."""
    _, url = spawn_redis("--maxmemory", "8mb", "--maxmemory-policy", "noeviction")
    _, base = spawn_api(url=url, RELAY_MAX_ARGS_BYTES="16384", RELAY_MAX_QUEUE_DEPTH="200")
    client = redis.Redis.from_url(url)
    for _ in range(30):  # 15 MB in all
        response = submit(base, echo_with_args_of(500_000))
        assert (response.status_code, error(response)["code"]) == (413, "args_too_large")
        assert "16384" in str(error(response)["message"])
        assert "RELAY_MAX_ARGS_BYTES" in str(error(response)["message"])
        assert error(response)["details"] == {
            "size_bytes": 500_000,
            "max_bytes": 16384,
            "setting": "RELAY_MAX_ARGS_BYTES",
        }
    assert submit(base, echo_with_args_of(16385)).status_code == 413

    statuses = [submit(base, echo_with_args_of(16384)).status_code for _ in range(200)]
    assert statuses == [202] * 200
    full = submit(base, echo_with_args_of(16384))
    assert (full.status_code, error(full)["code"]) == (503, "queue_full")
    # Room left: what the data takes (not the server's own overhead and client buffers, which moved by a megabyte
    # with the machine's load and made a fixed share of used_memory flaky), and a write Redis still takes.
    memory = client.info("memory")
    assert memory["used_memory_dataset"] < memory["maxmemory"] * 0.7, memory["used_memory_human"]
    assert client.set("room-left", b"x" * 512_000)  # OOM would raise
    client.close()
