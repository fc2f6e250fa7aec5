"""Stopping the stack: every container exits by itself, in time, with status 0; queued work survives `down`.

Exit status 0, not 143: each process is PID 1 (exec form; redis.sh execs redis-server) and handles SIGTERM
itself: Sanic drains its streams, arq lets running jobs finish, Redis flushes its AOF, and each then exits 0.
143 (128 + SIGTERM) would mean the process died of the signal's default action without any of that running;
137 would mean Docker had to SIGKILL it at the end of its grace period. Both are failures here.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

from tests.containers import measure
from tests.containers.compose import Container, Stack, grace_seconds
from tests.containers.conftest import UP_SECONDS
from tests.containers.relay_http import FINAL_STATES, Event, RelayHttp, types

STOP_SECONDS = 300


def finished_at(container: Container) -> datetime:
    """Docker's FinishedAt (RFC 3339 with nanoseconds) as a datetime."""
    text = container["State"]["FinishedAt"]
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed)


def test_stop_ends_every_container_cleanly_within_its_grace_period(running: Stack) -> None:
    streamed: list[Event] = []

    def follow(task_id: str) -> None:
        with RelayHttp(running.api_base, running.api_key) as reader:
            streamed.extend(reader.events(task_id))

    with RelayHttp(running.api_base, running.api_key) as relay:
        task_id = relay.submit_ok("sleep", kwargs={"seconds": 3, "steps": 3})
        follower = threading.Thread(target=follow, args=(task_id,), daemon=True)
        follower.start()
        relay.wait_state(task_id, {"running"}, timeout=30)

    began = datetime.now(UTC)
    with measure.timed("compose stop (a 3 s task running), s"):
        running.compose("stop", timeout=STOP_SECONDS)
    follower.join(30)
    # The API drained its stream until the task ended; the worker let the task finish before exiting.
    assert types(streamed)[-1:] == ["end"], types(streamed)
    assert streamed[-1]["data"]["state"] == "succeeded"

    containers = {c["Name"]: c for c in running.containers()}
    assert len(containers) == 4
    for name, container in containers.items():
        state = container["State"]
        assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False), name
    relay_finished = [finished_at(c) for c in containers.values() if service(c) != "redis"]
    for name, container in containers.items():
        # Compose stops Redis only once the API and workers are down: count its grace from then.
        start = max(relay_finished) if service(container) == "redis" else began
        took = (finished_at(container) - start).total_seconds()
        assert took < grace_seconds(service(container)), f"{name} took {took:.1f}s"
        key = f"  {service(container)} stop, s"
        measure.record(key, max(took, float(measure.value(key) or 0)))


def service(container: Container) -> str:
    return str(container["Config"]["Labels"]["com.docker.compose.service"])


def test_queued_and_deferred_tasks_survive_down_and_up_on_the_redis_volume(running: Stack) -> None:
    running.compose("stop", "worker")
    with RelayHttp(running.api_base, running.api_key) as relay:
        queued = [relay.submit_ok("echo", kwargs={"message": f"kept {i}"}) for i in range(5)]
        deferred = relay.submit_ok("echo", kwargs={"message": "deferred"}, delay_seconds=15)
        assert {relay.state(t)["state"] for t in queued} == {"queued"}
        assert relay.state(deferred)["state"] == "deferred"

    with measure.timed("compose down + up, volume kept (2 workers healthy), s"):
        running.compose("down", timeout=STOP_SECONDS)  # no --volumes: redis-data stays
        assert running.containers() == []
        running.up(workers=2, timeout=UP_SECONDS)
    with RelayHttp(running.api_base, running.api_key) as relay:
        for i, task_id in enumerate(queued):
            state = relay.wait_state(task_id, FINAL_STATES, timeout=60)
            assert (state["state"], state["result"]) == ("succeeded", {"echo": f"kept {i}"})
        assert relay.wait_state(deferred, FINAL_STATES, timeout=60)["state"] == "succeeded"

    # The volume is what kept them: without it, the same ids are unknown.
    running.compose("down", "--volumes", timeout=STOP_SECONDS)
    running.up(workers=2, timeout=UP_SECONDS)
    with RelayHttp(running.api_base, running.api_key) as relay:
        response = relay.http.get(f"/tasks/{queued[0]}")
        assert response.status_code == 404, response.text
