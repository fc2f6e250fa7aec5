"""A rolling deploy, the way Kubernetes does one, under a steady stream of submits and streams.

Two API processes and two workers; each is replaced in turn: start the new one, wait until it is ready,
take the old one out of the load balancer (what the preStop pause achieves), SIGTERM it. Nothing may
fail: every submit gets a 2xx, every accepted task completes, and every stream ends with its ``end``
event, directly or after following a ``reconnect`` hint to another API process.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness.client import ndjson_lines, read_events, wait_state
from bench.harness.processes import ManagedProcess, wait_until
from tests.conftest import StartApi, StartWorker
from tests.support.heavy import heavy


@dataclass
class Balancer:
    """Round-robin over the API processes currently in rotation.

    It also counts requests it routed that have not been answered yet: Kubernetes' preStop pause exists
    so that requests routed to a pod before its endpoint was removed arrive before SIGTERM; here the
    deploy waits for that count to reach zero instead of sleeping.
    """

    bases: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    unanswered: Counter[str] = field(default_factory=Counter)

    def pick(self, avoid: str | None = None) -> str:
        with self.lock:
            choices = [b for b in self.bases if b != avoid] or self.bases
            base = choices[next(self.counter) % len(choices)]
            self.unanswered[base] += 1
            return base

    def answered(self, base: str) -> None:
        with self.lock:
            self.unanswered[base] -= 1

    def replace(self, old: str, new: str) -> None:
        with self.lock:
            self.bases = [new if b == old else b for b in self.bases]

    def drained(self, base: str) -> bool:
        with self.lock:
            return self.unanswered[base] <= 0


@dataclass
class Load:
    """Submits tasks until stopped; every third one is streamed back on its own POST response."""

    balancer: Balancer
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stream_endings: list[str] = field(default_factory=list)
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=16) as streams:
            for i in itertools.count():
                if self.stop.wait(0.05):
                    return
                # Every tenth task outlasts the workers' grace period (5 s) by far, so the ones that started in
                # the 7 s before a worker's SIGTERM are re-queued mid-run (with 7 s tasks, only those in the last
                # 2 s were: on a busy machine, sometimes none).
                seconds = 12.0 if i % 10 == 0 else 0.6
                body = {"task": "sleep", "kwargs": {"seconds": seconds, "steps": 3}, "id": f"roll-{uuid.uuid4().hex}"}
                if i % 3 == 0:
                    streams.submit(self._guarded, self._submit_and_stream, body)
                else:
                    self._guarded(self._submit, body)

    def _guarded(self, action: Callable[[dict[str, object]], None], body: dict[str, object]) -> None:
        try:
            action(body)
        except httpx.HTTPError as exc:
            self.failures.append(f"{body['id']}: {exc!r}")

    def _submit(self, body: dict[str, object]) -> None:
        base = self.balancer.pick()
        try:
            response = httpx.post(f"{base}/tasks", json=body, timeout=10)
        finally:
            self.balancer.answered(base)
        if response.status_code // 100 != 2:
            self.failures.append(f"{body['id']}: {response.status_code} {response.text}")
        else:
            self.accepted.append(str(body["id"]))

    def _submit_and_stream(self, body: dict[str, object]) -> None:
        base = self.balancer.pick()
        headers = {"Accept": "application/x-ndjson"}
        stream = httpx.stream("POST", f"{base}/tasks", json=body, headers=headers, timeout=30)
        try:
            response = stream.__enter__()
        finally:
            self.balancer.answered(base)  # the stream itself may outlive its API process: that is the point
        try:
            if response.status_code != 200:
                self.failures.append(f"{body['id']}: {response.status_code}")
                return
            self.accepted.append(str(body["id"]))
            last = json.loads("{}")
            for line in response.iter_lines():
                if line.strip():
                    last = json.loads(line)
        finally:
            stream.__exit__(None, None, None)
        for _ in range(5):  # the process a client reconnects to may be the next one replaced
            if last.get("type") != "reconnect":
                break
            base = self.balancer.pick(avoid=base)
            last = self._resume(base, str(body["id"]), last["data"]["last_seq"])
            with self.lock:
                self.reconnects += 1
        self.stream_endings.append(str(last.get("type")))

    def _resume(self, base: str, task_id: str, after: int) -> dict[str, Any]:
        """Follow the task's events from ``after`` on ``base``; its last event. Answered once the stream opens,
        like a streamed POST: a stream may last as long as its task (12 s), and the deploy does not wait for
        open streams (SIGTERM hands them a ``reconnect``), only for requests routed and not yet answered."""
        stream = httpx.stream("GET", f"{base}/tasks/{task_id}/events", params={"after": after}, timeout=30)
        try:
            response = stream.__enter__()
        finally:
            self.balancer.answered(base)
        try:
            if response.status_code != 200:
                self.failures.append(f"{task_id}: resuming got {response.status_code}")
                return {}
            return [e for e in ndjson_lines(response) if e["type"] != "heartbeat"][-1]
        finally:
            stream.__exit__(None, None, None)


@heavy
def test_rolling_deploy_loses_nothing(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    q = f"relay:roll:{uuid.uuid4().hex[:8]}"
    api_env = {"RELAY_QUEUE_NAME": q, "RELAY_API_DRAIN_SECONDS": "0.3"}
    worker_env = {"RELAY_QUEUE_NAME": q, "RELAY_WORKER_GRACE_SECONDS": "5"}
    apis = [spawn_api(**api_env) for _ in range(2)]
    workers = [spawn_worker(**worker_env) for _ in range(2)]
    balancer = Balancer([base for _, base in apis])
    load = Load(balancer)
    thread = threading.Thread(target=load.run)
    thread.start()
    try:
        for old in workers:
            spawn_worker(**worker_env)
            retire(old)
        for old, old_base in apis:
            _, new_base = spawn_api(**api_env)
            balancer.replace(old_base, new_base)
            wait_until(lambda b=old_base: balancer.drained(b), 10, "requests already routed to the old API")
            retire(old)
    finally:
        load.stop.set()
        thread.join(60)
    assert load.failures == []
    assert len(load.accepted) > 20
    for task_id in load.accepted:
        assert wait_state(balancer.pick(), task_id, {"succeeded", "failed", "aborted"}, 30)["state"] == "succeeded"
    assert len(load.stream_endings) > 10
    assert set(load.stream_endings) == {"end"}
    assert load.reconnects > 0  # some streams were open when their API process stopped, and recovered
    requeued = sum("requeued" in {e["type"] for e in read_events(balancer.pick(), t)} for t in load.accepted)
    assert requeued > 0  # some tasks outlasted a worker's grace period and completed elsewhere


def retire(proc: ManagedProcess) -> None:
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.output()
    assert "Traceback" not in proc.output()
