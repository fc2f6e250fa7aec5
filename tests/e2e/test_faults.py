"""Fault injection under load, each scenario reconciled: every accepted task reaches one final state.

At-least-once execution is allowed where a process dies mid-job; such re-runs are counted (two
``started`` events) rather than hidden, and a task still ends exactly once from the client's view. A worker
killed mid-job is covered by tests/e2e/test_leases.py.
"""

from __future__ import annotations

import collections
import random
import signal
import time
import uuid
from pathlib import Path

import httpx
import redis

from bench.harness.client import (
    read_events,
    read_workflow_events,
    submit_ok,
    submit_workflow,
    types,
    wait_state,
    wait_workflow,
)
from bench.harness.processes import free_port, start_redis
from tests.conftest import StartApi, StartWorker
from tests.support.heavy import heavy
from tests.support.load import SubmitLoad

FINAL = {"succeeded", "failed", "aborted"}


def queue() -> str:
    return f"relay:fault:{uuid.uuid4().hex[:8]}"


def reconcile(base: str, task_ids: list[str]) -> int:
    """Every task succeeded and its stream ended exactly once; returns how many ran more than once."""
    reruns = 0
    for task_id in task_ids:
        assert wait_state(base, task_id, FINAL, timeout=60)["state"] == "succeeded"
        events = types(read_events(base, task_id))
        assert events.count("end") == 1
        assert events[-1] == "end"
        reruns += events.count("started") > 1
    return reruns


@heavy
def test_redis_restart_under_load_loses_nothing(spawn_api: StartApi, spawn_worker: StartWorker, tmp_path: Path) -> None:
    port = free_port()
    server, url = start_redis(tmp_path, port, appendonly=True)
    api, base = spawn_api(url=url, RELAY_REDIS_TIMEOUT_SECONDS="1")
    worker = spawn_worker(url=url)
    try:
        with SubmitLoad(base, {"task": "sleep", "kwargs": {"seconds": 0.2, "steps": 2}}) as load:
            load.wait_for(lambda s: len(s.accepted) >= 10, 20, "submits before the outage")
            server.stop()  # SIGTERM: Redis fsyncs its AOF and exits
            load.wait_for(lambda s: s.statuses[503] >= 5, 20, "503s during the outage")
            server, _ = start_redis(tmp_path, port, appendonly=True)
            accepted_before = len(load.accepted)
            load.wait_for(lambda s: len(s.accepted) >= accepted_before + 10, 30, "submits after the restart")
        assert load.errors == []
        assert set(load.statuses) <= {202, 503}
        assert load.slowest < 5  # never a hang past the API's Redis timeout
        # The worker rode the restart out: no lease lapsed (10 s), so nothing ran twice.
        assert reconcile(base, load.accepted) == 0
        assert worker.proc.poll() is None  # the worker rode it out and reconnected by itself
    finally:
        api.stop()
        worker.stop()
        server.stop()


def test_redis_pause_shorter_than_timeouts_fails_nothing(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_client: redis.Redis
) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), "RELAY_REDIS_TIMEOUT_SECONDS": "3"}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    with SubmitLoad(base, {"task": "echo"}) as load:
        load.wait_for(lambda s: len(s.accepted) >= 10, 20, "submits before the pause")
        redis_client.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        load.wait_for(lambda s: s.slowest >= 0.5, 10, "a submit held by the pause, then answered")
        after_pause = len(load.accepted)
        load.wait_for(lambda s: len(s.accepted) >= after_pause + 20, 20, "submits after the pause")
    assert load.errors == []
    assert set(load.statuses) == {202}
    assert reconcile(base, load.accepted) == 0


def test_api_sigkill_mid_stream_client_resumes_elsewhere(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    victim, base = spawn_api(**env)
    _, other = spawn_api(**env)
    spawn_worker(**env)
    task_id = submit_ok(base, {"task": "count", "kwargs": {"n": 20, "interval": 0.05}})
    seen: list[int] = []
    try:
        with httpx.stream("GET", f"{base}/tasks/{task_id}/events", timeout=10) as response:
            for line in response.iter_lines():
                if '"seq"' in line:
                    seen.append(int(line.split('"seq":', 1)[1].split(",", 1)[0]))
                if len(seen) == 4:
                    victim.send(signal.SIGKILL)
    except httpx.HTTPError:
        pass  # the connection dies with the process
    assert victim.wait(10) == -signal.SIGKILL
    rest = read_events(other, task_id, after=seen[-1])
    seqs = seen + [e["seq"] for e in rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1]["type"] == "end"


@heavy
def test_workflows_finish_with_every_step_and_the_callback_once_while_workers_are_killed(
    spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """A chain of 200 steps, a chord of a 1,000-member group and a chain mapping over a 300-item list (its map
    expands in the commit of the step before it), while a worker is SIGKILLed or SIGTERMed every half second or so
    (and replaced): all end, every step is released once and ends once (one `step_started` and one `step_ended` in
    the workflow's log, one `end` in its own), the callback once, the map expands once; a step whose worker was
    killed mid-run ran again (at-least-once), which is counted, not hidden."""
    env = {
        "RELAY_QUEUE_NAME": queue(),
        "RELAY_LEASE_SECONDS": "2",  # a killed worker's jobs are taken over within about 2 s
        "RELAY_MAX_PICKUPS": "100",  # a job may be caught by many kills in a row
        "RELAY_WORKER_GRACE_SECONDS": "1",
        "RELAY_WORKER_CONCURRENCY": "4",
    }
    _, base = spawn_api(**env)
    workers = [spawn_worker(**env) for _ in range(3)]
    step = {"seconds": 0.03}  # a step lasts long enough for some kills to land mid-run
    chain = submit_workflow(
        base, {"chain": [{"task": "inc", "args": [0], "kwargs": step}] + [{"task": "inc", "kwargs": step}] * 199}
    )
    members = [{"task": "inc", "args": [i], "kwargs": step} for i in range(1000)]
    chord = submit_workflow(base, {"chord": members, "callback": {"task": "tsum"}})
    mapped = submit_workflow(
        base, {"chain": [{"task": "numbers", "args": [300]}, {"map": "inc", "kwargs": step}, {"task": "tsum"}]}
    )
    rng = random.Random(23)
    kills: dict[str, int] = {"SIGKILL": 0, "SIGTERM": 0}
    signals = (signal.SIGKILL, signal.SIGTERM)
    deadline = time.monotonic() + 240
    while not all(_ended(base, flow) for flow in (chain, chord, mapped)):
        assert time.monotonic() < deadline, "the workflows did not end under the faults"
        time.sleep(rng.uniform(0.3, 0.8))
        victim = workers.pop(rng.randrange(len(workers)))
        how = signals[sum(kills.values()) % 2]
        victim.send(how)
        kills[how.name] += 1
        workers.append(spawn_worker(wait_ready=False, **env))
    assert min(kills.values()) > 0
    assert wait_workflow(base, chain)["result"] == 200
    assert wait_workflow(base, chord)["result"] == sum(range(1, 1001))
    assert wait_workflow(base, mapped)["result"] == sum(range(2, 302))  # inc of 1..300
    reruns = 0
    for flow, steps in ((chain, 200), (chord, 1001), (mapped, 303)):  # the map is step 1, its members 3 to 302
        events = read_workflow_events(base, flow, timeout=120)
        assert events[-1]["type"] == "workflow_end"  # the stream ended
        started = collections.Counter(e["step"] for e in events if e["type"] == "step_started")
        ended = collections.Counter(e["step"] for e in events if e["type"] == "step_ended")
        assert started == ended == collections.Counter(range(steps))  # each released once, ended once
        ends = collections.Counter(e["step"] for e in events if e["type"] == "end" and "step_seq" in e)
        tasks = [i for i in range(steps) if not (flow == mapped and i == 1)]  # the map itself runs no task
        assert ends == collections.Counter(tasks)  # each step's own log: one end
        runs = collections.Counter(e["step"] for e in events if e["type"] == "started" and "step_seq" in e)
        reruns += sum(n - 1 for n in runs.values())
    callback = types(read_events(base, f"{chord}:1000"))
    assert callback.count("end") == 1
    print(f"kills: {kills}; steps run again after their worker was killed: {reruns}")


def _ended(base: str, flow: str) -> bool:
    return httpx.get(f"{base}/workflows/{flow}", timeout=10).json()["state"] != "running"
