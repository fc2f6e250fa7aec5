"""What an operator watches, scraped from real processes: each worker's Prometheus metrics on its own port
(durations, waits, outcomes, retries, re-queues, in-flight jobs, events), the API's request metrics by route
pattern, and ``GET /stats`` (queue and live workers) that the dashboard reads."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from api.schemas import Stats
from bench.harness.client import read_events, submit_ok, types, wait_state
from bench.harness.processes import ManagedProcess, free_port, start_worker, wait_until
from shared import keys
from tests.conftest import StartApi, StartWorker
from tests.support.environment import relay_env
from tests.support.metrics import scrape, value

FINAL = {"succeeded", "failed", "aborted"}
API_KEY = "observability-key-1"


def queue() -> str:
    return f"relay:obs:{uuid.uuid4().hex[:8]}"


def metrics_worker(spawn_worker: StartWorker, **env: str) -> tuple[ManagedProcess, str]:
    """A worker serving its metrics on a free port, and their URL."""
    port = free_port()
    proc = spawn_worker(RELAY_WORKER_METRICS_PORT=str(port), **env)
    return proc, f"http://127.0.0.1:{port}/metrics"


def submit_with_key(base: str, body: dict[str, object]) -> str:
    response = httpx.post(f"{base}/tasks", json=body, headers={"X-API-Key": API_KEY}, timeout=10)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


def test_a_workers_metrics_count_its_runs_by_task_and_outcome(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(**env)
    _, url = metrics_worker(spawn_worker, **env)
    before = scrape(url)
    assert value(before, "relay_worker_task_duration_seconds_count", task="echo") == 0
    assert value(before, "relay_worker_concurrency") == 10

    echoes = [submit_ok(base, {"task": "echo", "args": [f"m{i}"]}) for i in range(3)]
    failed = submit_ok(base, {"task": "fail", "kwargs": {"message": "boom"}})
    flaky = submit_ok(base, {"task": "flaky", "kwargs": {"failures": 1}})  # fails once, retried, succeeds
    for task_id in [*echoes, failed, flaky]:
        wait_state(base, task_id, FINAL)
    long = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 60, "steps": 60}})
    wait_state(base, long, {"running"})
    published = "relay_worker_events_published_total"
    wait_until(lambda: value(scrape(url), published, type="progress") >= 1, 10, "a progress event counted")
    assert value(scrape(url), "relay_worker_jobs_in_flight") == 1
    assert httpx.delete(f"{base}/tasks/{long}", timeout=10).status_code == 202
    wait_state(base, long, {"aborted"})
    wait_until(lambda: value(scrape(url), "relay_worker_jobs_in_flight") == 0, 10, "no job in flight")

    after = scrape(url)
    outcomes = "relay_worker_task_outcomes_total"
    assert value(after, outcomes, task="echo", outcome="succeeded") == 3
    assert value(after, outcomes, task="fail", outcome="failed") == 1
    assert value(after, outcomes, task="flaky", outcome="retrying") == 1
    assert value(after, outcomes, task="flaky", outcome="succeeded") == 1
    assert value(after, outcomes, task="sleep", outcome="aborted") == 1
    assert value(after, "relay_worker_task_retries_total", task="flaky", error_type="Flaky") == 1
    assert value(after, "relay_worker_tasks_started_total", task="flaky") == 2
    # The duration histogram moved: one observation per recorded outcome of a run, in its buckets too.
    assert value(after, "relay_worker_task_duration_seconds_count", task="echo") == 3
    assert value(after, "relay_worker_task_duration_seconds_bucket", task="echo", le="+Inf") == 3
    assert value(after, "relay_worker_task_duration_seconds_count", task="sleep") == 1
    assert value(after, "relay_worker_task_duration_seconds_sum", task="sleep") > 0
    assert value(after, "relay_worker_task_queue_wait_seconds_count", task="echo") == 3
    assert value(after, "relay_worker_task_queue_wait_seconds_count", task="flaky") == 2
    # started, result/error, end for each run; the flaky one also its retrying event.
    assert value(after, published, type="started") == 7
    assert value(after, published, type="end") == 6
    assert value(after, published, type="retrying") == 1


def test_queue_wait_is_measured_from_the_due_time(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(**env)
    # Due before any worker runs: it waits until one starts, and that wait is what is measured.
    task_id = submit_ok(base, {"task": "echo", "args": ["waited"]})
    _, url = metrics_worker(spawn_worker, **env)
    wait_state(base, task_id, {"succeeded"})
    waited = value(scrape(url), "relay_worker_task_queue_wait_seconds_sum", task="echo")
    view = httpx.get(f"{base}/tasks/{task_id}", timeout=10).json()
    expected = dt.datetime.fromisoformat(view["started_at"]) - dt.datetime.fromisoformat(view["enqueued_at"])
    assert abs(waited - expected.total_seconds()) < 0.01  # start minus due (here: the enqueue), in ms
    assert waited > 0.2  # a worker takes longer than that to start


def test_a_worker_that_takes_over_a_lost_job_counts_the_requeue_and_its_reason(
    spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), "RELAY_LEASE_SECONDS": "1"}
    _, base = spawn_api(**env)
    victim, _ = metrics_worker(spawn_worker, **env)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    body = {"task": "hangs_first_try", "kwargs": {"steps": 1}}  # the first try lasts until its worker dies
    task_id = httpx.post(f"{base}/tasks", json=body, headers={"traceparent": traceparent}, timeout=10).json()["id"]
    wait_state(base, task_id, {"running"})
    _, survivor = metrics_worker(spawn_worker, **env)
    victim.send(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    assert wait_state(base, task_id, FINAL, timeout=30)["state"] == "succeeded"
    events = read_events(base, task_id)
    assert types(events) == ["started", "requeued", "started", "progress", "result", "end"]
    assert {e["trace_id"] for e in events} == {traceparent.split("-")[1]}  # the re-queued job kept its context
    samples = scrape(survivor)
    task = "hangs_first_try"
    assert value(samples, "relay_worker_task_requeues_total", task=task, reason="worker lost") == 1
    assert value(samples, "relay_worker_task_outcomes_total", task=task, outcome="requeued") == 1
    assert value(samples, "relay_worker_task_outcomes_total", task=task, outcome="succeeded") == 1


def test_port_zero_serves_no_metrics(spawn_worker: StartWorker) -> None:
    port = free_port()
    proc = spawn_worker(RELAY_QUEUE_NAME=queue(), RELAY_WORKER_METRICS_PORT="0")
    assert "metrics: off (RELAY_WORKER_METRICS_PORT=0)" in proc.output()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_busy_metrics_port_stops_the_worker_with_one_line(redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = relay_env(redis_url, RELAY_QUEUE_NAME=queue(), RELAY_WORKER_METRICS_PORT=str(port))
        proc = start_worker(tmp_path, env, wait_ready=False)
        try:
            assert proc.wait(30) == 78
        finally:
            proc.stop()
    line = (
        f"RELAY_WORKER_METRICS_PORT={port} is invalid: port {port} is already in use on 127.0.0.1 (another worker "
        "on this host?); give each worker its own port, or 0 for no metrics server"
    )
    output = proc.output()
    assert line in output.splitlines()
    assert "Traceback" not in output
    assert "relay worker ready" not in output


def test_api_requests_are_counted_by_route_pattern_never_by_raw_path(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=queue(), RELAY_API_KEYS=f"ops:{API_KEY}")
    headers = {"X-API-Key": API_KEY}
    ids = [f"no-such-task-{i}" for i in range(5)]
    for task_id in ids:
        assert httpx.get(f"{base}/tasks/{task_id}", headers=headers, timeout=10).status_code == 404
    assert httpx.get(f"{base}/tasks/{ids[0]}", timeout=10).status_code == 401  # refused requests count too
    assert httpx.get(f"{base}/no/such/route/{ids[0]}", headers=headers, timeout=10).status_code == 404
    created = submit_with_key(base, {"task": "echo", "args": ["k"]})
    samples = scrape(f"{base}/metrics")
    requests = "relay_http_requests_total"
    assert value(samples, requests, route="/tasks/<task_id:str>", method="GET", status="404") == 5
    assert value(samples, requests, route="/tasks/<task_id:str>", method="GET", status="401") == 1
    assert value(samples, requests, route="unmatched", method="GET", status="404") == 1
    assert value(samples, requests, route="/tasks", method="POST", status="202") == 1
    latency = "relay_http_request_duration_seconds_count"
    assert value(samples, latency, route="/tasks/<task_id:str>", method="GET", status="404") == 5
    labels = {v for (_, pairs) in samples for _, v in pairs}
    assert not [label for label in labels if any(i in label for i in [*ids, created])]  # no id in any label


def test_stats_show_the_queue_and_each_live_worker(
    spawn_api: StartApi, spawn_worker: StartWorker, on_redis: dict[str, str]
) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), "RELAY_API_KEYS": f"ops:{API_KEY}", **on_redis}
    _, base = spawn_api(offers=False, **env)  # only the two real workers below
    assert httpx.get(f"{base}/stats", timeout=10).status_code == 401  # data needs the key
    port = free_port()
    first = spawn_worker(RELAY_WORKER_METRICS_PORT=str(port), **env)
    second = spawn_worker(**env)
    running = submit_with_key(base, {"task": "sleep", "kwargs": {"seconds": 60, "steps": 60}})
    submit_with_key(base, {"task": "echo", "args": ["later"], "delay_seconds": 600})

    def workers() -> list[dict[str, Any]]:
        response = httpx.get(f"{base}/stats", headers={"X-API-Key": API_KEY}, timeout=10)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["workers"]
        return found

    wait_until(lambda: sum(w["running"] for w in workers()) == 1 and len(workers()) == 2, 15, "both, one busy")
    body = httpx.get(f"{base}/stats", headers={"X-API-Key": API_KEY}, timeout=10).json()
    Stats.model_validate(body)  # the shape the OpenAPI document gives
    assert body["queue"] == {"name": env["RELAY_QUEUE_NAME"], "due": 0, "deferred": 1, "running": 1}
    by_pid = {w["pid"]: w for w in body["workers"]}
    assert set(by_pid) == {first.pid, second.pid}
    assert {w["status"] for w in by_pid.values()} == {"alive"}
    assert (by_pid[first.pid]["metrics_port"], by_pid[second.pid]["metrics_port"]) == (port, None)
    busy = next(w for w in by_pid.values() if w["running"] == 1)
    assert busy["running_tasks"][0]["id"] == running
    assert busy["running_tasks"][0]["task"] == "sleep"
    assert busy["concurrency"] == 10

    idle, other = (second, first) if busy["pid"] == first.pid else (first, second)
    idle.stop()  # a worker that stops cleanly is gone at once, not after a timeout
    assert idle.wait(1) == 0
    wait_until(lambda: [w["pid"] for w in workers()] == [other.pid], 5, "the stopped worker to be gone")
    assert httpx.delete(f"{base}/tasks/{running}", headers={"X-API-Key": API_KEY}, timeout=10).status_code == 202


def test_metrics_are_served_while_a_task_blocks_the_workers_event_loop(
    spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(**env)
    worker, url = metrics_worker(spawn_worker, **env)
    task_id = submit_ok(base, {"task": "blocks_loop_untimed", "kwargs": {"seconds": 6}})
    wait_until(lambda: "the event loop has been blocked" in worker.output(), 20, "the stall warning")
    samples = scrape(url)  # from the metrics server's own thread: the loop is still blocked
    assert "the event loop is free again" not in worker.output()
    assert value(samples, "relay_worker_jobs_in_flight") == 1
    assert wait_state(base, task_id, FINAL)["state"] == "succeeded"


def test_a_job_refused_before_it_starts_counts_as_failed_without_a_duration(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_url: str
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(**env)
    _, url = metrics_worker(spawn_worker, **env)
    task_id = submit_ok(base, {"task": "flaky", "delay_seconds": 1})
    client = redis.Redis.from_url(redis_url)
    client.set(keys.tries(task_id), 5)  # RELAY_MAX_TRIES pickups already used: refused when it falls due
    client.close()
    assert wait_state(base, task_id, FINAL)["error"]["error_type"] == "TriesExhausted"
    samples = scrape(url)
    assert value(samples, "relay_worker_task_outcomes_total", task="flaky", outcome="failed") == 1
    assert value(samples, "relay_worker_tasks_started_total", task="flaky") == 0
    assert value(samples, "relay_worker_task_duration_seconds_count", task="flaky") == 0


def test_a_streamed_request_is_counted_once_its_stream_starts(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    body = {"task": "sleep", "kwargs": {"seconds": 60, "steps": 60}}
    headers = {"Accept": "application/x-ndjson"}
    with httpx.stream("POST", f"{base}/tasks", json=body, headers=headers, timeout=30) as response:
        task_id = response.headers["X-Relay-Task-Id"]
        first = next(line for line in response.iter_lines() if line.strip())
        assert '"started"' in first
        samples = scrape(f"{base}/metrics")  # the stream is still open
        assert value(samples, "relay_http_requests_total", route="/tasks", method="POST", status="200") == 1
        assert httpx.delete(f"{base}/tasks/{task_id}", timeout=10).status_code == 202


def test_arqs_health_value_counts_relays_outcomes_and_only_waiting_jobs_as_queued(
    spawn_api: StartApi, spawn_worker: StartWorker, redis_client: Any
) -> None:
    """The value ``arq --check worker.settings`` reads: arq's counters never moved (Relay's engine runs the
    jobs), and arq counted the running jobs, which stay on the queue under their leases, as queued."""
    q = queue()
    _, base = spawn_api(RELAY_QUEUE_NAME=q)
    spawn_worker(RELAY_QUEUE_NAME=q)
    ended = [
        submit_ok(base, {"task": "echo"}),
        submit_ok(base, {"task": "echo"}),
        submit_ok(base, {"task": "fail"}),
        submit_ok(base, {"task": "flaky", "kwargs": {"failures": 1}}),  # one retry, then a success
    ]
    assert [wait_state(base, t, FINAL)["state"] for t in ended] == ["succeeded"] * 2 + ["failed", "succeeded"]
    running = submit_ok(base, {"task": "sleep", "kwargs": {"seconds": 60, "steps": 1}})
    wait_state(base, running, {"running"})
    submit_ok(base, {"task": "echo", "delay_seconds": 600})  # waiting on the queue
    key = f"{q}:health-check:{socket.gethostname()}"
    wanted = "j_complete=3 j_failed=1 j_retried=1 j_ongoing=1 queued=1"

    def recorded() -> bool:  # arq writes it every health_check_interval (10 s)
        found = redis_client.get(key)
        return found is not None and found.decode().endswith(wanted)

    try:
        wait_until(recorded, 30, "the health value")
    except TimeoutError:
        raise AssertionError(f"the health value is {redis_client.get(key)!r}, not ending with {wanted!r}") from None
