"""Hand-offs with real processes (``shared/keys.py`` "Hand-off"; the scripts' rules are in
tests/shared/test_handoff_scripts.py): a submit to an idle worker reaches it with no claim; a worker lost while
idle costs its handed job no pickup; a stopping worker leaves the idle registry at once, so nothing is handed to it
while it drains. Workers run at production defaults (2 s idle poll, 10 s lease) unless a test says why not."""

from __future__ import annotations

import signal
import uuid

import redis

from bench.harness.client import read_events, submit_ok, submit_workflow, types, wait_state, wait_workflow
from bench.harness.processes import free_port, wait_until
from shared import keys
from tests.conftest import StartApi, StartWorker
from tests.support.metrics import scrape, value

FINAL = {"succeeded", "failed", "aborted"}


def queue() -> str:
    return f"relay:hof:{uuid.uuid4().hex[:8]}"


def registered(client: redis.Redis, queue_name: str) -> dict[str, str]:
    """The idle registry: worker token -> its registration."""
    raw: dict[bytes, bytes] = client.hgetall(keys.idle_registry(queue_name))  # type: ignore[assignment]
    return {token.decode(): entry.decode() for token, entry in raw.items()}


def start_with_an_idle_worker(spawn_api: StartApi, spawn_worker: StartWorker, redis_url: str) -> tuple[str, str]:
    """An API and one worker on a queue of their own, once the worker registered as idle: the API's base URL and
    the worker's metrics URL."""
    name = queue()
    _, base = spawn_api(RELAY_QUEUE_NAME=name)
    port = free_port()
    spawn_worker(RELAY_QUEUE_NAME=name, RELAY_WORKER_METRICS_PORT=str(port))
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: len(registered(client, name)) == 1, 10, "the idle worker to register")
    finally:
        client.close()
    return base, f"http://127.0.0.1:{port}/metrics"


def test_submits_to_an_idle_worker_are_handed_to_it(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_url: str
) -> None:
    base, metrics = start_with_an_idle_worker(spawn_api, spawn_worker, redis_url)
    for _ in range(3):
        task_id = submit_ok(base, {"task": "echo", "kwargs": {"message": "hi"}})
        final = wait_state(base, task_id, FINAL)
        assert (final["state"], final["tries"]) == ("succeeded", 1)
        assert types(read_events(base, task_id)) == ["started", "result", "end"]
    assert value(scrape(metrics), "relay_worker_handoffs_total") == 3


def test_a_chains_steps_are_handed_to_the_idle_worker_by_the_commits_that_release_them(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_url: str
) -> None:
    """Each step of a chain is released alone, by the commit of the step before it (the first by the workflow's
    submit), and goes to the idle worker as a submit would: claimed there, with no notice and no claim call."""
    base, metrics = start_with_an_idle_worker(spawn_api, spawn_worker, redis_url)
    steps = [{"task": "add", "args": [0, 1]}] + [{"task": "add", "args": [1]}] * 7
    flow = submit_workflow(base, {"chain": steps})
    view = wait_workflow(base, flow)
    assert (view["state"], view["result"]) == ("succeeded", 8)
    # Ten free slots, one taken by each hand-off: all eight steps are handed (without the commit's hand-off, none:
    # each is named, and the worker claims it). The worker's 2 s poll may claim mid-chain, while busy, and so end
    # its registration: the next step is then named, and its claim registers the worker again.
    assert value(scrape(metrics), "relay_worker_handoffs_total") >= 6


def test_a_worker_lost_while_idle_costs_its_handed_job_no_pickup(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_url: str
) -> None:
    # A 2 s lease (the default is 10 s) only shortens the wait for the lapse that recovery needs.
    env = {"RELAY_QUEUE_NAME": queue(), "RELAY_LEASE_SECONDS": "2"}
    client = redis.Redis.from_url(redis_url)
    _, base = spawn_api(**env)
    victim = spawn_worker(**env)
    wait_until(lambda: len(registered(client, env["RELAY_QUEUE_NAME"])) == 1, 10, "the idle worker to register")
    [token] = registered(client, env["RELAY_QUEUE_NAME"])
    victim.send(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    # Its registration outlives it (a few seconds at most): the submit is handed to the dead worker.
    task_id = submit_ok(base, {"task": "echo", "kwargs": {"message": "hi"}, "max_retries": 0})
    assert client.llen(keys.handoff(token)) == 1
    spawn_worker(**env)
    final = wait_state(base, task_id, FINAL, timeout=30)
    # One try allowed, and it was not spent: the job never ran on the lost worker.
    assert (final["state"], final["tries"]) == ("succeeded", 1)
    assert types(read_events(base, task_id)) == ["started", "result", "end"]
    assert client.llen(keys.handoff(token)) == 0


def test_a_stopping_worker_leaves_the_registry_at_once(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_url: str
) -> None:
    name = queue()
    client = redis.Redis.from_url(redis_url)
    _, base = spawn_api(RELAY_QUEUE_NAME=name)
    # A grace period (the suite's is 3 s) long enough for the 6 s job below to drain.
    draining = spawn_worker(RELAY_QUEUE_NAME=name, RELAY_WORKER_GRACE_SECONDS="15")
    # Still running well after the stop's registry check below (which must not be met by the drain ending).
    running = submit_ok(base, {"task": "sleeps", "kwargs": {"seconds": 6}})
    wait_state(base, running, {"running"})
    # Running one job of ten, it is registered for the other nine.
    wait_until(lambda: len(registered(client, name)) == 1, 10, "the worker to register")
    draining.send(signal.SIGTERM)
    wait_until(lambda: not registered(client, name), 3, "the stopping worker to leave the registry")
    later = submit_ok(base, {"task": "echo", "kwargs": {"message": "hi"}})  # not handed to the stopping worker
    assert draining.wait(30) == 0
    assert wait_state(base, running, FINAL)["state"] == "succeeded"  # its grace period let it finish
    assert wait_state(base, later, {"queued"})["state"] == "queued"
    spawn_worker(RELAY_QUEUE_NAME=name)
    final = wait_state(base, later, FINAL)
    assert (final["state"], final["tries"]) == ("succeeded", 1)
    assert types(read_events(base, later)) == ["started", "result", "end"]


def test_a_worker_named_for_a_deferred_job_tells_the_others_as_it_stops(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_url: str
) -> None:
    """A deferred job is named for one registered worker (shared/keys.py "Named claims"), the only one to hear of
    it. Stopped before the job falls due (a rolling deploy), it tells the others when it falls due
    (worker.engine.promises), and one of them runs it then, not at its next poll."""
    name = queue()
    client = redis.Redis.from_url(redis_url)
    env = {"RELAY_QUEUE_NAME": name, "RELAY_POLL_DELAY_SECONDS": "60"}  # a poll far beyond the test's bound
    _, base = spawn_api(**env)
    named = spawn_worker(**env)  # ten free slots: the most, so it is the one named
    spawn_worker(RELAY_WORKER_CONCURRENCY="1", **env)
    wait_until(lambda: len(registered(client, name)) == 2, 10, "both workers to register")
    task_id = submit_ok(base, {"task": "echo", "delay_seconds": 3})
    seconds, micros = client.time()  # type: ignore[misc]
    due_by = seconds * 1000 + micros // 1000 + 3000

    def named_claimed() -> bool:  # it claimed on the notice, so registered again, until the job falls due
        return any(int(entry.split("|")[0]) < due_by for entry in registered(client, name).values())

    wait_until(named_claimed, 5, "the named worker's claim")
    named.send(signal.SIGTERM)
    assert named.wait(30) == 0
    assert wait_state(base, task_id, FINAL, timeout=15)["state"] == "succeeded"
