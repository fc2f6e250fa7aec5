"""A rolling restart of three worker containers under a steady submit load, the way a deploy replaces them.

Each worker in turn gets ``docker stop`` (SIGTERM, then its stop_grace_period), exits, is started again and
must be healthy before the next one goes. Tasks are shorter than the grace period, so a graceful stop lets
every running one finish: every accepted task must succeed exactly once (one ``started`` event, one try),
and every stream must end with ``end``.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness.processes import wait_until
from tests.containers import measure
from tests.containers.compose import Stack, grace_seconds
from tests.containers.conftest import UP_SECONDS
from tests.containers.relay_http import FINAL_STATES, RelayHttp, types

WORKERS = 3
SUBMIT_INTERVAL = 0.1  # about 10 submits a second
STREAM_EVERY = 4  # every fourth submit reads its events back on the POST response


@dataclass
class Load:
    """Submits short ``sleep`` tasks until stopped, recording every answer."""

    base: str
    api_key: str
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stream_endings: list[str] = field(default_factory=list)

    def run(self) -> None:
        with RelayHttp(self.base, self.api_key) as relay, ThreadPoolExecutor(max_workers=8) as streams:
            for i in itertools.count():
                if self.stop.wait(SUBMIT_INTERVAL):
                    return
                task_id = f"roll-{uuid.uuid4().hex}"
                kwargs = {"seconds": 0.4 + (i % 5) * 0.3, "steps": 3}  # 0.4 to 1.6 s, far below the grace
                if i % STREAM_EVERY == 0:
                    streams.submit(self._guarded, self._submit_and_stream, None, task_id, kwargs)
                else:
                    self._guarded(self._submit, relay, task_id, kwargs)

    def _guarded(self, action: Any, *args: Any) -> None:
        """Any error is a failure of the run: one raised in a stream thread would otherwise vanish."""
        try:
            action(*args)
        except Exception as exc:
            self.failures.append(f"{args[1]}: {exc!r}")

    def _submit(self, relay: RelayHttp, task_id: str, kwargs: dict[str, Any]) -> None:
        response = relay.submit("sleep", task_id, kwargs=kwargs)
        if response.status_code == 202:
            self.accepted.append(task_id)
        else:
            self.failures.append(f"{task_id}: {response.status_code} {response.text}")

    def _submit_and_stream(self, _: None, task_id: str, kwargs: dict[str, Any]) -> None:
        with RelayHttp(self.base, self.api_key) as relay:
            status, events = relay.submit_and_stream("sleep", task_id, kwargs=kwargs)
        if status != 200:
            self.failures.append(f"{task_id}: stream answered {status}")
            return
        self.accepted.append(task_id)
        self.stream_endings.append(events[-1]["type"] if events else "nothing")


def queue_depth(stack: Stack) -> float:
    """Jobs waiting or running, from the API's Prometheus gauge."""
    text = httpx.get(f"{stack.api_base}/metrics", timeout=10).text
    depth = 0.0
    for gauge in ("relay_queue_due", "relay_queue_deferred", "relay_queue_running"):
        found = re.search(rf"^{gauge} ([0-9.e+]+)$", text, re.MULTILINE)
        assert found, f"{gauge} missing from /metrics:\n{text}"
        depth += float(found.group(1))
    return depth


def restart_one_by_one(stack: Stack) -> tuple[list[float], list[float]]:
    """docker stop, then start, each worker in turn; the next only once all are healthy again.

    Returns the queue depth when each stop began and how long each stop took."""
    grace = grace_seconds("worker")
    depths, stops = [], []
    for worker in stack.containers("worker"):
        depths.append(queue_depth(stack))
        began = time.monotonic()
        stack.engine.run("stop", worker["Id"], timeout=grace + 30)  # Docker's wait: the container's StopTimeout
        stops.append(time.monotonic() - began)
        state = stack.engine.inspect(worker["Id"])[0]["State"]
        # 0: it drained and exited by itself (a SIGKILL at the end of its grace period would be 137).
        assert state["ExitCode"] == 0, f"{worker['Name']} exited {state['ExitCode']}\n{stack.logs('worker')}"
        stack.engine.run("start", worker["Id"])
        stack.wait_healthy({"worker": WORKERS}, timeout=UP_SECONDS)
    return depths, stops


def test_a_rolling_worker_restart_under_load_runs_every_task_once(running: Stack) -> None:
    running.up(workers=WORKERS, timeout=UP_SECONDS)
    load = Load(running.api_base, running.api_key)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(load.accepted) >= 20, 30, "the load to get going", interval=0.1)
        with measure.timed(f"rolling restart of {WORKERS} workers under load, s"):
            depths, stops = restart_one_by_one(running)
    finally:
        load.stop.set()
        thread.join(60)
    measure.record("  tasks submitted during the restart", float(len(load.accepted)))
    measure.record("  longest worker stop (SIGTERM to exit), s", max(stops))
    assert load.failures == []
    assert min(depths) > 0, "a worker was stopped with nothing in flight: the restart proved nothing"

    with RelayHttp(running.api_base, running.api_key) as relay:
        for task_id in load.accepted:
            assert relay.wait_state(task_id, FINAL_STATES, timeout=60)["state"] == "succeeded", task_id
        for task_id in load.accepted:
            events = relay.events(task_id)
            assert types(events).count("started") == 1, f"{task_id} ran more than once: {types(events)}"
            assert "requeued" not in types(events), task_id
            assert (events[-1]["type"], events[-1]["data"]["state"]) == ("end", "succeeded"), task_id
            assert relay.state(task_id)["tries"] == 1, task_id
    assert len(load.stream_endings) >= 10
    assert set(load.stream_endings) == {"end"}
    refused = re.findall(r".*(?:NOPERM|no permissions to run).*", running.logs(tail=100_000))
    assert refused == [], "the Redis ACL refused a command Relay uses"
