"""A steady stream of submits in a background thread, recording every answer for reconciliation."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SubmitLoad:
    """Submits ``body`` (with a fresh id each time) every ``interval`` seconds until stopped."""

    base: str
    body: dict[str, Any]
    interval: float = 0.02
    resubmit: bool = False  # after a 503, send the same id again (a client that retries by idempotency)
    accepted: list[str] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)  # time.monotonic() of each 202
    accepted_sent_at: list[float] = field(default_factory=list)  # time.monotonic() when each accepted one was sent
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)  # error codes of the 503s
    without_retry_after: int = 0  # 503s that did not say when to retry
    errors: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # ids answered 503 (each try)
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SubmitLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=15) as http:
            retry_id = ""
            while not self._stop.wait(self.interval):
                task_id, retry_id = retry_id or f"load-{uuid.uuid4().hex}", ""
                started = time.monotonic()
                try:
                    response = http.post("/tasks", json={**self.body, "id": task_id})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    retry_id = task_id if self.resubmit else ""
                    continue
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.statuses[response.status_code] += 1
                if response.status_code == 202:
                    self.accepted.append(task_id)
                    self.accepted_at.append(time.monotonic())
                    self.accepted_sent_at.append(started)
                elif response.status_code != 503 or "error" not in response.json():
                    self.errors.append(f"{response.status_code}: {response.text}")
                else:
                    self.codes[response.json()["error"]["code"]] += 1
                    self.without_retry_after += "retry-after" not in response.headers
                    self.refused.append(task_id)
                    retry_id = task_id if self.resubmit else ""

    @property
    def answered(self) -> int:
        """Submits that got an HTTP answer so far."""
        return sum(self.statuses.values())

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        """Poll a condition on this load (e.g. 'a 503 was seen') with a deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}: {self.statuses}")
