"""Abort, idempotent submit, bad input, auth and subscriptions, against real processes."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
import pytest
import redis

from bench.harness.client import read_events, state, submit, submit_ok, types, wait_state
from bench.harness.processes import wait_until
from shared import keys, lanes
from tests.conftest import StartApi


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_abort_running_task(relay_any: str) -> None:
    task_id = submit_ok(relay_any, {"task": "sleep", "kwargs": {"seconds": 30, "steps": 30}})
    wait_state(relay_any, task_id, {"running"})
    response = httpx.delete(f"{relay_any}/tasks/{task_id}", timeout=10)
    assert response.status_code == 202
    assert response.json()["state"] == "aborting"
    events = read_events(relay_any, task_id)
    assert types(events)[0] == "started"
    assert types(events)[-2:] == ["aborted", "end"]
    assert events[-1]["data"] == {"state": "aborted"}
    final = wait_state(relay_any, task_id, {"aborted"})
    assert final["error"] == {"error_type": "Aborted", "message": "aborted while running"}
    assert final["started_at"] is not None


def test_abort_deferred_task_removes_it(relay_any: str) -> None:
    task_id = submit_ok(relay_any, {"task": "echo", "delay_seconds": 60})
    response = httpx.delete(f"{relay_any}/tasks/{task_id}", timeout=10)
    assert response.status_code == 200
    assert response.json()["state"] == "aborted"
    assert state(relay_any, task_id)["state"] == "aborted"
    assert types(read_events(relay_any, task_id)) == ["aborted", "end"]


def test_abort_finished_task_is_409_and_unknown_is_404(relay: str) -> None:
    task_id = submit_ok(relay, {"task": "echo"})
    wait_state(relay, task_id, {"succeeded"})
    finished = httpx.delete(f"{relay}/tasks/{task_id}", timeout=10)
    assert finished.status_code == 409
    assert finished.json()["error"]["code"] == "not_abortable"
    assert httpx.delete(f"{relay}/tasks/{unique('none')}", timeout=10).status_code == 404


def test_same_id_twice_is_one_task(relay_any: str) -> None:
    task_id = unique("idem")
    body = {"task": "count", "kwargs": {"n": 2, "interval": 0}, "id": task_id}
    first, second = submit(relay_any, body), submit(relay_any, body)
    assert first.status_code == 202
    assert first.json()["created"] is True
    assert second.status_code == 200
    # The repeat reports the task's real state, whatever it reached meanwhile; everything else is the same.
    assert second.json()["state"] in {"queued", "running", "succeeded"}
    assert {**second.json(), "state": None} == {**first.json(), "created": False, "state": None}
    wait_state(relay_any, task_id, {"succeeded"})
    third = submit(relay_any, body)
    assert third.status_code == 200  # still one task once it has finished
    assert third.json()["state"] == "succeeded"
    assert types(read_events(relay_any, task_id)).count("started") == 1


def test_same_id_with_other_arguments_is_409(relay: str) -> None:
    task_id = unique("conflict")
    assert submit(relay, {"task": "echo", "args": ["a"], "id": task_id}).status_code == 202
    response = submit(relay, {"task": "echo", "args": ["b"], "id": task_id})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "id_conflict"


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, object] = body["error"]
    return error


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"\xff\xfe\x00", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b"[1, 2]", 422, "invalid_request"),
        (b'{"task": 5}', 422, "invalid_request"),
        (b'{"task": "echo", "surprise": 1}', 422, "invalid_request"),
        (b'{"task": "echo", "args": "nope"}', 422, "invalid_request"),
        (b'{"task": "echo", "id": "has space"}', 422, "invalid_request"),
        (b'{"task": "echo", "id": "../../etc"}', 422, "invalid_request"),
        (b'{"task": "echo", "delay_seconds": -1}', 422, "invalid_request"),
        (b'{"task": "echo", "delay_seconds": 1, "run_at": "2030-01-01T00:00:00Z"}', 422, "invalid_request"),
        (b'{"task": "echo", "timeout_seconds": 0}', 422, "invalid_request"),
        (b'{"task": "echo", "timeout_seconds": 100000}', 422, "invalid_request"),
        (b'{"task": "os.system", "args": ["rm -rf /"]}', 422, "unknown_task"),
        (b'{"task": "echo", "kwargs": {"nope": 1}}', 422, "invalid_arguments"),
        (b'{"task": "echo", "args": [1, 2]}', 422, "invalid_arguments"),
        (b'{"task": "echo", "args": ["a"], "kwargs": {"message": "b"}}', 422, "invalid_arguments"),
        (b'{"task": "sleep", "kwargs": {"seconds": "long"}}', 422, "invalid_arguments"),
        (b'{"task": "sleep", "kwargs": {"seconds": -1}}', 422, "invalid_arguments"),
    ],
)
def test_bad_submissions_get_clear_json_errors(relay: str, content: bytes, status: int, code: str) -> None:
    response = httpx.post(f"{relay}/tasks", content=content, timeout=10)
    assert response.status_code == status, response.text
    assert _error(response)["code"] == code


def test_oversized_body_is_413(relay: str) -> None:
    payload = b'{"task": "echo", "args": ["' + b"x" * 2_000_000 + b'"]}'
    response = httpx.post(f"{relay}/tasks", content=payload, timeout=10)
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"


def test_rejected_submissions_enqueue_nothing(relay: str, redis_client: redis.Redis) -> None:
    task_id = unique("rejected")
    response = submit(relay, {"task": "echo", "kwargs": {"nope": 1}, "id": task_id})
    assert response.status_code == 422
    assert redis_client.zscore(keys.lane("relay:queue", lanes.lane_id("echo", "default", 0, None)), task_id) is None
    assert httpx.get(f"{relay}/tasks/{task_id}", timeout=10).status_code == 404


def test_unknown_route_and_method_are_json(relay: str) -> None:
    assert _error(httpx.get(f"{relay}/nope", timeout=10))["code"] == "not_found"
    response = httpx.put(f"{relay}/tasks", timeout=10)
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"


def test_full_queue_is_503_with_retry_after(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=unique("q"), RELAY_MAX_QUEUE_DEPTH="2")
    for _ in range(2):
        assert submit(base, {"task": "echo", "delay_seconds": 600}).status_code == 202
    response = submit(base, {"task": "echo"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert _error(response)["code"] == "queue_full"


def test_redis_down_is_503_and_not_ready(spawn_api: StartApi, spawn_redis) -> None:  # type: ignore[no-untyped-def]
    server, url = spawn_redis()
    _, base = spawn_api(url=url)
    server.stop()
    response = submit(base, {"task": "echo"})
    assert response.status_code == 503
    assert _error(response)["code"] == "redis_unavailable"
    assert httpx.get(f"{base}/health/ready", timeout=10).status_code == 503
    assert httpx.get(f"{base}/health/live", timeout=10).status_code == 200


def test_api_keys_when_configured(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_API_KEYS="first-key, second-key")
    assert submit(base, {"task": "echo"}).status_code == 401
    assert submit(base, {"task": "echo"}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert submit(base, {"task": "echo"}, headers={"X-API-Key": "second-key"}).status_code == 202
    assert submit(base, {"task": "echo"}, headers={"Authorization": "Bearer first-key"}).status_code == 202
    unauthorized = httpx.get(f"{base}/tasks/x", timeout=10)
    assert unauthorized.status_code == 401
    assert _error(unauthorized)["code"] == "unauthorized"
    assert httpx.get(f"{base}/", timeout=10).status_code == 401
    for open_path in ("/health/live", "/health/ready", "/metrics"):
        assert httpx.get(f"{base}{open_path}", timeout=10).status_code == 200


def test_no_keys_configured_means_open(relay: str) -> None:
    assert submit(relay, {"task": "echo"}, headers={"X-API-Key": "anything"}).status_code == 202


def test_disconnecting_client_frees_its_subscription(relay: str, redis_client: redis.Redis) -> None:
    task_id = submit_ok(relay, {"task": "echo", "delay_seconds": 60})
    channel = keys.events_channel(task_id)

    def subscribers() -> int:
        return int(dict(redis_client.pubsub_numsub(channel))[channel.encode()])

    host, port = relay.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_until(lambda: subscribers() == 1, 10, "the stream to subscribe")
    wait_until(lambda: subscribers() == 0, 10, "the subscription to be freed")
    httpx.delete(f"{relay}/tasks/{task_id}", timeout=10)


def test_streams_share_one_pubsub_connection(relay: str, redis_client: redis.Redis) -> None:
    task_ids = [submit_ok(relay, {"task": "echo", "delay_seconds": 60}) for _ in range(20)]
    streams = [httpx.stream("GET", f"{relay}/tasks/{t}/events", timeout=10) for t in task_ids]
    try:
        for stream in streams:
            stream.__enter__()

        def all_subscribed() -> bool:
            counts = dict(redis_client.pubsub_numsub(*[keys.events_channel(t) for t in task_ids]))
            return all(n == 1 for n in counts.values())

        wait_until(all_subscribed, 10, "20 streams to subscribe")
        carriers = [c for c in redis_client.client_list(_type="pubsub") if int(c["sub"]) >= len(task_ids)]
        assert len(carriers) == 1  # all 20 streams ride on one connection of the one API process
        assert int(carriers[0]["sub"]) == len(task_ids) + 1  # and the process's inbox (shared/keys.py "Inboxes")
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for t in task_ids:
            httpx.delete(f"{relay}/tasks/{t}", timeout=10)


def test_metrics_expose_queue_depth(relay: str) -> None:
    body = httpx.get(f"{relay}/metrics", timeout=10).text
    for gauge in ("relay_queue_due ", "relay_queue_deferred ", "relay_queue_running "):
        assert gauge in body
    assert "relay_redis_up 1.0" in body


def test_queue_depth_limit_is_exact_under_concurrent_submits(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=unique("q"), RELAY_MAX_QUEUE_DEPTH="10")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            responses = await asyncio.gather(*(client.post("/tasks", json={"task": "echo"}) for _ in range(50)))
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert statuses.count(202) == 10  # the check and the enqueue are one atomic step: no overshoot
    assert statuses.count(503) == 40
