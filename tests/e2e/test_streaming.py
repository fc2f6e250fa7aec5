"""Submit -> stream -> result through the real API and worker processes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from bench.harness.client import (
    ndjson_lines,
    read_events,
    sse_messages,
    state,
    submit,
    submit_ok,
    types,
    wait_state,
)


def test_echo_returns_at_once(relay_any: str) -> None:
    task_id = submit_ok(relay_any, {"task": "echo", "args": ["hi"]})
    events = read_events(relay_any, task_id)
    assert types(events) == ["started", "result", "end"]
    assert events[1]["data"] == {"echo": "hi"}
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert all(e["task_id"] == task_id for e in events)
    final = state(relay_any, task_id)
    assert final["state"] == "succeeded"
    assert final["result"] == {"echo": "hi"}
    assert final["tries"] == 1
    assert final["arguments"] == {"message": "hi"}
    assert final["finished_at"] >= final["started_at"] >= final["enqueued_at"]


def test_sleep_reports_progress(relay: str) -> None:
    task_id = submit_ok(relay, {"task": "sleep", "kwargs": {"seconds": 0.2, "steps": 4}})
    events = read_events(relay, task_id)
    assert types(events) == ["started"] + ["progress"] * 4 + ["result", "end"]
    assert [e["data"]["current"] for e in events[1:5]] == [1, 2, 3, 4]
    assert events[-1]["data"] == {"state": "succeeded"}


def test_count_streams_partials(relay_any: str) -> None:
    task_id = submit_ok(relay_any, {"task": "count", "kwargs": {"n": 5, "interval": 0}})
    events = read_events(relay_any, task_id)
    assert types(events) == ["started"] + ["partial"] * 5 + ["result", "end"]
    assert [e["data"]["i"] for e in events[1:6]] == [1, 2, 3, 4, 5]
    assert events[6]["data"] == {"count": 5, "sum": 15}


def test_failure_is_reported(relay: str) -> None:
    task_id = submit_ok(relay, {"task": "fail", "kwargs": {"message": "on purpose"}})
    events = read_events(relay, task_id)
    assert types(events) == ["started", "error", "end"]
    error = events[1]["data"]
    assert (error["error_type"], error["message"]) == ("DemoFailure", "on purpose")
    assert "raise DemoFailure(message)" in error["traceback"]  # the task's own line
    assert events[2]["data"] == {"state": "failed"}
    final = state(relay, task_id)
    assert final["state"] == "failed"
    assert final["error"]["message"] == "on purpose"


def test_timeout_fails_the_task(relay: str) -> None:
    task_id = submit_ok(relay, {"task": "sleep", "kwargs": {"seconds": 5, "steps": 1}, "timeout_seconds": 0.2})
    events = read_events(relay, task_id)
    assert types(events) == ["started", "error", "end"]
    assert events[1]["data"]["error_type"] == "TaskTimedOut"
    assert state(relay, task_id)["state"] == "failed"


def test_submit_and_stream_on_one_response_ndjson(relay: str) -> None:
    body = {"task": "count", "kwargs": {"n": 3, "interval": 0.01}}
    headers = {"Accept": "application/x-ndjson"}
    with httpx.stream("POST", f"{relay}/tasks", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        task_id = response.headers["x-relay-task-id"]
        assert response.headers["location"] == f"/tasks/{task_id}"
        events = [e for e in ndjson_lines(response) if e["type"] != "heartbeat"]
    assert types(events) == ["started", "partial", "partial", "partial", "result", "end"]


def test_submit_and_stream_on_one_response_sse(relay_any: str) -> None:
    headers = {"Accept": "text/event-stream"}
    with httpx.stream("POST", f"{relay_any}/tasks", json={"task": "echo"}, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = [m for m in sse_messages(response) if "comment" not in m]
    assert [m["event"] for m in messages] == ["started", "result", "end"]
    assert [m["id"] for m in messages] == ["1", "2", "3"]
    assert json.loads(messages[1]["data"])["data"] == {"echo": "hello"}


def test_late_subscriber_gets_the_whole_replay(relay_any: str) -> None:
    task_id = submit_ok(relay_any, {"task": "count", "kwargs": {"n": 3, "interval": 0}})
    wait_state(relay_any, task_id, {"succeeded"})
    assert types(read_events(relay_any, task_id)) == ["started", "partial", "partial", "partial", "result", "end"]


def test_resume_from_last_event_id(relay_any: str) -> None:
    task_id = submit_ok(relay_any, {"task": "count", "kwargs": {"n": 6, "interval": 0.05}})
    url = f"{relay_any}/tasks/{task_id}/events"
    seen: list[dict[str, str]] = []
    with httpx.stream("GET", url, headers={"Accept": "text/event-stream"}, timeout=30) as response:
        for message in sse_messages(response):
            if "comment" not in message:
                seen.append(message)
            if len(seen) == 3:
                break  # the client drops the connection mid-task
    headers = {"Accept": "text/event-stream", "Last-Event-ID": seen[-1]["id"]}
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        rest = [m for m in sse_messages(response) if "comment" not in m]
    ids = [int(m["id"]) for m in seen + rest]
    assert ids == list(range(1, 10))  # started, 6 partials, result, end: nothing missed, nothing twice
    assert rest[-1]["event"] == "end"
    # A client that already has the final event is told there is nothing more (stops SSE retries).
    headers["Last-Event-ID"] = rest[-1]["id"]
    assert httpx.get(url, headers=headers, timeout=10).status_code == 204


def test_a_resume_point_that_is_no_sequence_number_is_refused(relay_any: str) -> None:
    """One past 64 bits: Redis refused the log's read, and the stream answered a reconnect hint naming the same
    point, which the client followed for ever."""
    task_id = submit_ok(relay_any, {"task": "count", "kwargs": {"n": 1, "interval": 0}})
    wait_state(relay_any, task_id, {"succeeded"})
    url = f"{relay_any}/tasks/{task_id}/events"
    ndjson, sse = {"Accept": "application/x-ndjson"}, {"Accept": "text/event-stream"}
    for value in ("x", "-1", str(2**64 - 1), str(2**63)):
        for query, headers in (({"after": value}, ndjson), ({}, sse | {"Last-Event-ID": value})):
            response = httpx.get(url, params=query, headers=headers, timeout=10)
            assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request"), value
    assert httpx.get(url, params={"after": str(2**63 - 1)}, headers=ndjson, timeout=10).status_code == 204


def test_ndjson_resume_with_after_parameter(relay: str) -> None:
    task_id = submit_ok(relay, {"task": "count", "kwargs": {"n": 3, "interval": 0}})
    wait_state(relay, task_id, {"succeeded"})
    events = read_events(relay, task_id, after=3)
    assert [e["seq"] for e in events] == [4, 5, 6]


def test_a_stream_resumed_past_the_final_event_ends_when_the_task_does(relay: str) -> None:
    # A stale position (say from an earlier task of the same id, its result expired): above any seq this run
    # will reach, on a task that has not ended yet, so the 204 at connect does not apply.
    task_id = submit_ok(relay, {"task": "echo", "delay_seconds": 1})
    url = f"{relay}/tasks/{task_id}/events"
    deadline = time.monotonic() + 20
    lines: list[dict[str, object]] = []
    with httpx.stream("GET", url, params={"after": 50}, timeout=10) as response:
        assert response.status_code == 200  # not ended at connect
        for line in ndjson_lines(response):
            lines.append(line)
            assert time.monotonic() < deadline, f"the stream outlived its task: {state(relay, task_id)}"
    assert all(line == {"type": "heartbeat"} for line in lines)  # nothing numbered below the client's position
    assert state(relay, task_id)["state"] == "succeeded"
    assert httpx.get(url, params={"after": 50}, timeout=10).status_code == 204  # what a reconnect is told


def test_idle_stream_sends_heartbeats(relay: str) -> None:
    task_id = submit_ok(relay, {"task": "echo", "delay_seconds": 60})
    assert state(relay, task_id)["state"] == "deferred"
    with httpx.stream("GET", f"{relay}/tasks/{task_id}/events", timeout=10) as response:
        first = next(ndjson_lines(response))
    assert first == {"type": "heartbeat"}
    assert httpx.delete(f"{relay}/tasks/{task_id}", timeout=10).status_code == 200


@pytest.mark.parametrize("accept", ["text/html", "image/png"])
def test_events_in_an_unsupported_format_is_406(relay: str, accept: str) -> None:
    task_id = submit_ok(relay, {"task": "echo"})
    response = httpx.get(f"{relay}/tasks/{task_id}/events", headers={"Accept": accept}, timeout=10)
    assert response.status_code == 406
    assert response.json()["error"]["code"] == "not_acceptable"


def test_events_of_unknown_task_is_404(relay: str) -> None:
    response = httpx.get(f"{relay}/tasks/no-such-task/events", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "task_not_found"


def test_ping(relay: str) -> None:
    assert httpx.get(f"{relay}/", timeout=5).json() == {"service": "relay", "ping": "pong"}


def test_submit_response_shape(relay: str) -> None:
    response = submit(relay, {"task": "echo"})
    body = response.json()
    assert response.status_code == 202
    assert body["created"] is True
    assert body["state"] == "queued"
    assert body["links"] == {"self": f"/tasks/{body['id']}", "events": f"/tasks/{body['id']}/events"}
    assert response.headers["location"] == f"/tasks/{body['id']}"
