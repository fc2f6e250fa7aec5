"""Relay's public HTTP contract, and nothing else: submit, stream NDJSON, GET state, DELETE (abort).

The container tests talk to Relay only through this, so they hold whatever the task core does inside.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

Event = dict[str, Any]
FINAL_STATES = frozenset({"succeeded", "failed", "aborted"})
NDJSON = {"Accept": "application/x-ndjson"}


class RelayHttp:
    """A client for one Relay API base URL, with its API key. One per thread."""

    def __init__(self, base: str, api_key: str, timeout: float = 30) -> None:
        self.http = httpx.Client(base_url=base, headers={"X-API-Key": api_key}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RelayHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, task: str, task_id: str | None = None, **body: Any) -> httpx.Response:
        return self.http.post("/tasks", json={"task": task, **({"id": task_id} if task_id else {}), **body})

    def submit_ok(self, task: str, task_id: str | None = None, **body: Any) -> str:
        response = self.submit(task, task_id, **body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def submit_and_stream(self, task: str, task_id: str, **body: Any) -> tuple[int, list[Event]]:
        """POST with ``Accept: application/x-ndjson``: the status and the events streamed on the response."""
        payload = {"task": task, "id": task_id, **body}
        with self.http.stream("POST", "/tasks", json=payload, headers=NDJSON) as response:
            if response.status_code != 200:
                response.read()
                return response.status_code, []
            return 200, list(events_of(response))

    def events(self, task_id: str, **params: Any) -> list[Event]:
        """The task's events from the start (or ``after``) until its ``end``."""
        with self.http.stream("GET", f"/tasks/{task_id}/events", params=params, headers=NDJSON) as response:
            assert response.status_code == 200, response.read()
            return list(events_of(response))

    def state(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def abort(self, task_id: str) -> httpx.Response:
        return self.http.delete(f"/tasks/{task_id}")

    def wait_state(self, task_id: str, wanted: set[str] | frozenset[str], timeout: float) -> dict[str, Any]:
        """Poll GET until the task's state is one of ``wanted``."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.state(task_id)
            if last["state"] in wanted:
                return last
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} never reached {set(wanted)} within {timeout}s; last: {last}")


def events_of(response: httpx.Response) -> Iterator[Event]:
    """NDJSON events, heartbeats dropped."""
    for line in response.iter_lines():
        if line.strip():
            event: Event = json.loads(line)
            if event["type"] != "heartbeat":
                yield event


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]
