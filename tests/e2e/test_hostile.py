"""Hostile input: huge and deeply nested JSON, bad bytes, giant headers, odd ids, and clients that
open streams and never read them. Every answer is a JSON error; the process keeps serving others."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from bench.harness.client import read_events, submit_ok, types
from bench.harness.processes import wait_until
from tests.conftest import StartApi
from tests.support.heavy import heavy


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_deeply_nested_json_is_refused(relay: str) -> None:
    deep = b'{"task": "echo", "args": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}"
    response = httpx.post(f"{relay}/tasks", content=deep, timeout=10)
    assert (response.status_code, error_code(response)) == (422, "invalid_request")


def test_thousands_of_bad_keys_get_a_bounded_answer(relay: str) -> None:
    # 60,000 keys are refused by the arguments size limit before anything validates them...
    body = json.dumps({"task": "echo", "kwargs": {f"k{i}": i for i in range(60_000)}}).encode()
    response = httpx.post(f"{relay}/tasks", content=body, timeout=10)
    assert (response.status_code, error_code(response)) == (413, "args_too_large")
    assert len(response.content) < 2_000
    # ...and the thousand that fit under it are all counted, but only 50 are listed.
    body = json.dumps({"task": "echo", "kwargs": {f"k{i}": i for i in range(1_000)}}).encode()
    response = httpx.post(f"{relay}/tasks", content=body, timeout=10)
    assert (response.status_code, error_code(response)) == (422, "invalid_arguments")
    assert len(response.content) < 20_000
    assert response.json()["error"]["details"][-1]["msg"] == "... and 950 more problems"


@pytest.mark.parametrize("body", [b'{"task": "echo", "args": ["\xff\xfe"]}', b"\x00\x01\x02", b"\xef\xbb\xbf{}"])
def test_bytes_that_are_not_utf8_json(relay: str, body: bytes) -> None:
    response = httpx.post(f"{relay}/tasks", content=body, timeout=10)
    assert (response.status_code, error_code(response)) == (400, "malformed_json")


def test_giant_header_is_refused_with_json(relay: str) -> None:
    response = httpx.get(f"{relay}/", headers={"X-Big": "a" * 20_000}, timeout=10)
    assert response.status_code in {413, 431}
    assert error_code(response) == "payload_too_large"


@pytest.mark.parametrize("odd", ["%00", "%2e%2e%2f%2e%2e%2fetc", "é" * 300, "a" * 5000, "%F0%9F%92%A3", "x;rm -rf"])
def test_odd_task_ids_are_not_found(relay: str, odd: str) -> None:
    for method, path in [("GET", f"/tasks/{odd}"), ("DELETE", f"/tasks/{odd}"), ("GET", f"/tasks/{odd}/events")]:
        response = httpx.request(method, f"{relay}{path}", timeout=10)
        assert response.status_code == 404, (method, path, response.text[:200])
        assert error_code(response) in {"task_not_found", "not_found"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def metrics_or_empty(base: str) -> str:
    """The API's metrics, or "" when they take over 10 s: while it opens 400 replays on a slow host (a CI run timed
    out so). Whether others are starved is asserted after they have started, end to end."""
    try:
        return httpx.get(f"{base}/metrics", timeout=10).text
    except httpx.TimeoutException:
        return ""


@heavy
def test_streams_that_never_read_do_not_starve_others_or_grow_memory(spawn_api: StartApi, spawn_worker) -> None:  # type: ignore[no-untyped-def]
    # A patient pool: on a busy machine 400 replays at once can keep all 100 connections busy past the 2 s
    # default wait, and a stream refused that way ends with a reconnect hint (seen with another heavy test
    # alongside). Stalled readers are what this test is about, not the pool's bound (test_redis_pool_bound).
    api, base = spawn_api(RELAY_QUEUE_NAME="relay:hostile", RELAY_REDIS_POOL_TIMEOUT_SECONDS="20")
    spawn_worker(RELAY_QUEUE_NAME="relay:hostile")
    chatty = submit_ok(base, {"task": "count", "kwargs": {"n": 20_000, "interval": 0}})
    host, port = base.removeprefix("http://").split(":")
    baseline = rss_mb(api.pid)
    sockets = []
    try:
        for _ in range(400):
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET /tasks/{chatty}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sockets.append(sock)  # and never read from it
        # All 400 streams started (counted when their headers go out). Not "400 open at once": the kernel may
        # buffer a whole stream (a socket on loopback takes up to 4 MB, the chatty task writes 2.4 MB), which then
        # ends, and Sanic cuts a stream that could not write for RESPONSE_TIMEOUT (60 s), which a loaded machine
        # can take to open them all (a CI run failed so).
        started = 'relay_http_requests_total{method="GET",route="/tasks/<task_id:str>/events",status="200"} 400.0'
        wait_until(lambda: started in metrics_or_empty(base), 60, "400 streams to start")
        # Others are still served, end to end, while the stalled readers sit on the chatty task.
        quick = submit_ok(base, {"task": "count", "kwargs": {"n": 3, "interval": 0}})
        assert types(read_events(base, quick)) == ["started", "partial", "partial", "partial", "result", "end"]
        wait_until(lambda: "succeeded" in httpx.get(f"{base}/tasks/{chatty}", timeout=10).text, 60, "the chatty task")
        assert rss_mb(api.pid) - baseline < 100  # measured ~21 MB: a send buffer and one replay page each
    finally:
        for sock in sockets:
            sock.close()
    wait_until(
        lambda: "relay_streams_open 0.0" in httpx.get(f"{base}/metrics", timeout=10).text, 30, "streams to close"
    )
