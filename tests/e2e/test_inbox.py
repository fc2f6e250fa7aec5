"""A task submitted with its events streamed back comes back on its API process's inbox (shared/keys.py,
"Inboxes"): no subscription per task, and every way its events are written reaches the stream at once."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import redis

from bench.harness.client import ndjson_lines, submit_ok, types
from shared import keys
from tests.conftest import StartApi, StartWorker

STREAM = {"Accept": "application/x-ndjson"}


def numsub(client: redis.Redis, channel: str) -> int:
    return int(dict(client.pubsub_numsub(channel))[channel.encode()])


def test_a_submitted_stream_subscribes_to_no_channel_of_its_own(relay: str, redis_client: redis.Redis) -> None:
    body = {"task": "sleep", "kwargs": {"seconds": 0.4, "steps": 2}}
    with httpx.stream("POST", f"{relay}/tasks", json=body, headers=STREAM, timeout=30) as response:
        task_id = response.headers["x-relay-task-id"]
        lines = ndjson_lines(response)
        seen = [next(lines)]  # `started`: the task runs, and its stream listens ...
        assert numsub(redis_client, keys.events_channel(task_id)) == 0  # ... on no channel of the task's own
        seen += [event for event in lines if event["type"] != "heartbeat"]
    assert types(seen) == ["started", "progress", "progress", "result", "end"]
    assert [event["seq"] for event in seen] == [1, 2, 3, 4, 5]


def test_an_abort_of_a_waiting_task_ends_its_submitted_stream_at_once(
    redis_url: str, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """At the production heartbeat (15 s): were the abort's events not published to the inbox, the stream
    would hear of them only at its next heartbeat's re-read of the log."""
    queue = f"relay:inbox:{uuid.uuid4().hex[:8]}"
    spawn_worker(RELAY_QUEUE_NAME=queue)
    _, base = spawn_api(RELAY_QUEUE_NAME=queue)
    body = {"task": "echo", "delay_seconds": 600}
    answers: list[int] = []
    timeout = httpx.Timeout(10, read=5)  # well under the heartbeat: the events must come from the abort itself
    with httpx.stream("POST", f"{base}/tasks", json=body, headers=STREAM, timeout=timeout) as response:
        task_id = response.headers["x-relay-task-id"]

        def abort() -> None:
            answers.append(httpx.delete(f"{base}/tasks/{task_id}", timeout=10).status_code)

        aborter = threading.Thread(target=abort)
        aborter.start()
        events = [e for e in ndjson_lines(response) if e["type"] != "heartbeat"]
    aborter.join()
    assert answers == [200]
    assert types(events) == ["aborted", "end"]
    assert events[-1]["data"] == {"state": "aborted"}


def test_a_repeated_submit_streams_the_first_ones_task(relay: str) -> None:
    """The second submit of an id creates nothing, and the record names the first submit's inbox (or none):
    its stream follows the task's own channel, and replays what was already written."""
    task_id = uuid.uuid4().hex
    body: dict[str, Any] = {"task": "echo", "args": ["again"], "id": task_id}
    assert submit_ok(relay, body) == task_id
    with httpx.stream("POST", f"{relay}/tasks", json=body, headers=STREAM, timeout=30) as response:
        assert response.status_code == 200
        events = [e for e in ndjson_lines(response) if e["type"] != "heartbeat"]
    assert types(events) == ["started", "result", "end"]
