"""What one task may put into Redis (issue #27): a result over ``RELAY_MAX_RESULT_BYTES`` or an event over
``RELAY_MAX_EVENT_BYTES`` fails the try (through its retry policy) and is never stored; a task's event log
keeps at most ``RELAY_EVENT_LOG_MAX_BYTES`` (oldest dropped, late readers get ``gap``, live followers see
all). Real API, worker and redis-server processes; the tasks are in ``tests/support/tasks.py``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from bench.harness.client import ndjson_lines, read_events, state, submit, submit_ok, types, wait_state
from bench.harness.processes import ManagedProcess, free_port
from shared import keys
from tests.conftest import StartApi, StartWorker
from tests.support.metrics import scrape, value

LIMIT = 4096
OVER = 5000  # characters of payload: its JSON is over LIMIT
MIB = 1024**2


def unique_queue() -> str:
    return f"relay:bounds:{uuid.uuid4().hex[:8]}"


UNDER = 3800  # characters of payload: its JSON (an event's envelope included) is within LIMIT
OVERSIZED = [
    pytest.param("big_result", {}, "ResultTooLarge", "result", id="result"),
    pytest.param("big_partials", {}, "EventTooLarge", "partial", id="partial"),
    pytest.param("big_progress", {}, "EventTooLarge", "progress", id="progress-message"),
    pytest.param("big_sync", {"what": "result"}, "ResultTooLarge", "result", id="sync-result"),
    pytest.param("big_sync", {"what": "partial"}, "EventTooLarge", "partial", id="sync-partial"),
]


@pytest.mark.parametrize(("task", "kwargs", "error_type", "kind"), OVERSIZED)
def test_an_oversized_output_fails_the_try_through_its_retry_policy_and_is_never_stored(
    spawn_api: StartApi,
    spawn_worker: StartWorker,
    redis_client: redis.Redis,
    task: str,
    kwargs: dict[str, Any],
    error_type: str,
    kind: str,
) -> None:
    env = {
        "RELAY_QUEUE_NAME": unique_queue(),
        "RELAY_MAX_RESULT_BYTES": str(LIMIT),
        "RELAY_MAX_EVENT_BYTES": str(LIMIT),
    }
    _, base = spawn_api(**env)
    port = free_port()
    worker = spawn_worker(RELAY_WORKER_METRICS_PORT=str(port), **env)
    task_id = submit_ok(base, {"task": task, "kwargs": {**kwargs, "size_bytes": OVER}})

    error = wait_state(base, task_id, {"failed", "succeeded"})["error"]
    assert error["error_type"] == error_type
    setting = "RELAY_MAX_RESULT_BYTES" if kind == "result" else "RELAY_MAX_EVENT_BYTES"
    assert setting in error["message"]
    assert str(LIMIT) in error["message"]
    events = read_events(base, task_id)
    # Its policy retries the refusal once, like any other failure it lists.
    assert types(events) == ["started", "retrying", "started", "error", "end"]
    assert events[1]["data"]["error"]["error_type"] == error_type
    # Nothing oversized reached Redis: neither the log nor the result record holds the payload.
    stored = sum(len(fields[b"e"]) for _, fields in redis_client.xrange(keys.events_stream(task_id)))
    assert stored < LIMIT
    assert redis_client.strlen(keys.result(task_id)) < LIMIT
    # The operator sees it: a metric by task and kind, and a log line naming the task and its id.
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "relay_worker_outputs_refused_total", task=task, kind=kind) == 2
    refused = [line for line in worker.output().splitlines() if task_id in line and setting in line]
    assert len(refused) == 2, worker.output()[-3000:]
    assert all(task in line for line in refused)

    # Within the limit, the same task succeeds with its output whole.
    within = submit_ok(base, {"task": task, "kwargs": {**kwargs, "size_bytes": UNDER}})
    assert wait_state(base, within, {"failed", "succeeded"})["state"] == "succeeded"
    outputs = [e["data"] for e in read_events(base, within) if e["type"] in ("result", "partial", "progress")]
    assert max(len(str(data)) for data in outputs) >= UNDER


def test_a_task_that_catches_the_refusal_still_fails_its_try(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": unique_queue(), "RELAY_MAX_EVENT_BYTES": str(LIMIT)}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    task_id = submit_ok(base, {"task": "swallows_big_event", "kwargs": {"size_bytes": OVER}})
    view = wait_state(base, task_id, {"failed", "succeeded"})
    assert (view["state"], view["error"]["error_type"]) == ("failed", "EventTooLarge")


BUDGET = 65_536
EVENT = 1000  # characters per partial
COUNT = 300  # about 300 KB of events: over four times the budget


def test_the_event_log_keeps_its_byte_budget_live_followers_see_all_late_readers_get_a_gap(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_client: redis.Redis
) -> None:
    env = {"RELAY_QUEUE_NAME": unique_queue(), "RELAY_EVENT_LOG_MAX_BYTES": str(BUDGET)}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    body = {"task": "big_partials", "kwargs": {"size_bytes": EVENT, "count": COUNT}}
    with httpx.stream("POST", f"{base}/tasks", json=body, headers={"Accept": "application/x-ndjson"}, timeout=60) as r:
        assert r.status_code == 200
        task_id = r.headers["x-relay-task-id"]
        live = [e for e in ndjson_lines(r) if e["type"] != "heartbeat"]
    total = COUNT + 3  # started, the partials, result, end
    assert [e["seq"] for e in live] == list(range(1, total + 1))  # a live follower sees every event
    assert types(live).count("partial") == COUNT

    late = read_events(base, task_id)
    gap, rest = late[0], late[1:]
    assert gap["type"] == "gap"
    assert gap["data"]["first_seq"] == 1
    assert [e["seq"] for e in rest] == list(range(gap["data"]["last_seq"] + 1, total + 1))
    assert rest == live[-len(rest) :]  # what is kept is the newest, unchanged

    stream = keys.events_stream(task_id)
    stored = sum(len(fields[b"e"]) for _, fields in redis_client.xrange(stream))
    assert BUDGET - 2 * EVENT < stored <= BUDGET  # as much as fits, never more
    assert int(redis_client.get(keys.event_bytes(task_id)) or 0) == stored  # the count is exact
    usage = redis_client.memory_usage(stream, samples=0)
    assert usage is not None
    assert usage < 1.25 * BUDGET, usage  # what Redis spends on the log
    assert redis_client.pttl(keys.event_bytes(task_id)) > 0  # the count expires with the log


def _used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def test_the_issue_scenario_with_the_defaults_leaves_redis_room_for_submits(
    spawn_redis: Callable[..., tuple[ManagedProcess, str]], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """Issue #27: a 20 MiB result and ten 10 MiB partials, on a 256 MB Redis that refuses writes when full."""
    _, url = spawn_redis("--maxmemory", "256mb", "--maxmemory-policy", "noeviction")
    _, base = spawn_api(url=url)
    spawn_worker(url=url)
    big = submit_ok(base, {"task": "big_result", "kwargs": {"size_bytes": 20 * MIB}})
    chatty = submit_ok(base, {"task": "big_partials", "kwargs": {"size_bytes": 10 * MIB, "count": 10}})
    for task_id, error_type in ((big, "ResultTooLarge"), (chatty, "EventTooLarge")):
        view = wait_state(base, task_id, {"failed", "succeeded"}, timeout=120)
        assert (view["state"], view["error"]["error_type"]) == ("failed", error_type)
    used = _used_memory(url)
    assert used < 128 * MIB, f"{used / MIB:.0f} MiB used of 256"
    assert submit(base, {"task": "echo"}).status_code == 202
    assert state(base, big)["state"] == "failed"
