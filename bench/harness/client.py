"""A small HTTP client for tests: submit, poll state, and read NDJSON or SSE streams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx


def submit(base: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{base}/tasks", json=body, timeout=10, **kwargs)


def submit_ok(base: str, body: dict[str, Any]) -> str:
    response = submit(base, body)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


def state(base: str, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/tasks/{task_id}", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_state(base: str, task_id: str, wanted: set[str], timeout: float = 20) -> dict[str, Any]:
    """Poll ``GET /tasks/{id}`` until its state is one of ``wanted`` (a task not there yet is waited for)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/tasks/{task_id}", timeout=10)
        assert response.status_code in {200, 404}, response.text
        last = response.json()
        if response.status_code == 200 and last["state"] in wanted:
            return last
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {wanted}; last: {last}")


def ndjson_lines(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.strip():
            yield json.loads(line)


def sse_messages(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Parsed SSE messages (``id``, ``event``, ``data``, ``retry``); comments come as ``{"comment": ...}``."""
    message: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if message:
                yield message
            message = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            field, _, value = line.partition(":")
            message[field] = value.removeprefix(" ")


def read_events(base: str, task_id: str, timeout: float = 30, **params: Any) -> list[dict[str, Any]]:
    """All NDJSON events of a task until the stream ends (heartbeats dropped)."""
    with httpx.stream("GET", f"{base}/tasks/{task_id}/events", params=params, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        return [e for e in ndjson_lines(response) if e["type"] != "heartbeat"]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def submit_workflow(base: str, workflow: dict[str, Any], **body: Any) -> str:
    """``POST /workflows`` a canvas (``{"chain": [...]}`` ...); returns its id."""
    response = httpx.post(f"{base}/workflows", json={"workflow": workflow, **body}, timeout=30)
    assert response.status_code == 202, response.text
    flow_id: str = response.json()["id"]
    return flow_id


def wait_workflow(base: str, flow_id: str, timeout: float = 30, wanted: frozenset[str] | None = None) -> dict[str, Any]:
    """Poll ``GET /workflows/{id}`` until it has ended (or is in one of ``wanted``)."""
    wanted = wanted or frozenset({"succeeded", "failed", "aborted"})
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/workflows/{flow_id}", timeout=10)
        assert response.status_code == 200, response.text
        last = response.json()
        if last["state"] in wanted:
            return last
        time.sleep(0.05)
    where = f"{last.get('state')} {last.get('counts')}"
    raise AssertionError(f"workflow {flow_id} never reached {set(wanted)}; last: {where}")


def read_workflow_events(base: str, flow_id: str, timeout: float = 60, **params: Any) -> list[dict[str, Any]]:
    """All NDJSON events of a workflow until its stream ends (heartbeats dropped)."""
    with httpx.stream("GET", f"{base}/workflows/{flow_id}/events", params=params, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        return [e for e in ndjson_lines(response) if e["type"] != "heartbeat"]
