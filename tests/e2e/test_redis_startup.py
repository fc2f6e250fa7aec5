"""Started before Redis: the API serves liveness at once and readiness once Redis answers; a worker waits
with one log line per attempt (never a traceback) and works as soon as Redis does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from bench.harness.client import read_events, submit_ok, types, wait_state
from bench.harness.processes import BIN, REPO, ManagedProcess, free_port, wait_until
from bench.harness.redis_servers import start_server
from tests.conftest import StartApi, StartWorker
from tests.support.environment import relay_env

ATTEMPT = re.compile(r"Redis at 127\.0\.0\.1:\d+ not usable \(attempt (\d+), next in [\d.]+s\): ConnectionError")


def attempts(proc: ManagedProcess) -> list[int]:
    return [int(n) for n in ATTEMPT.findall(proc.output())]


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_api_started_before_redis_is_live_at_once_and_ready_once_redis_is(
    tmp_path: Path, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    api, base = spawn_api(url=url, wait_ready=False, offers=False)
    wait_until(lambda: status(f"{base}/health/live") == 200, 20, "liveness while Redis is down")
    assert status(f"{base}/health/ready") == 503
    refused = httpx.post(f"{base}/tasks", json={"task": "echo"}, timeout=10)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "redis_unavailable"
    assert refused.headers["retry-after"] == "2"
    wait_until(lambda: len(attempts(api)) >= 2, 20, "two connection attempts logged")

    server = start_server(tmp_path, port=port)
    worker: ManagedProcess | None = None
    try:
        wait_until(lambda: status(f"{base}/health/ready") == 200, 30, "readiness once Redis is up")
        worker = spawn_worker(url=url)
        task_id = submit_ok(base, {"task": "count", "kwargs": {"n": 3, "interval": 0.01}})
        assert types(read_events(base, task_id))[-1] == "end"  # the pub/sub hub connected too
        logged = attempts(api)
        assert logged == list(range(1, len(logged) + 1))  # one line per attempt
        assert "Traceback" not in api.output()
        assert api.proc.poll() is None
    finally:
        api.stop()
        if worker is not None:
            worker.stop()  # while Redis is still there to take its goodbye
        server.proc.stop()


def test_worker_started_before_redis_waits_and_then_works(
    tmp_path: Path, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    worker = spawn_worker(url=url, wait_ready=False)
    wait_until(lambda: len(attempts(worker)) >= 3, 30, "three connection attempts logged")
    assert worker.proc.poll() is None

    server = start_server(tmp_path, port=port)
    try:
        wait_until(lambda: "relay worker ready" in worker.output(), 30, "the worker to start once Redis is up")
        _, base = spawn_api(url=url, offers=False)
        task_id = submit_ok(base, {"task": "echo", "kwargs": {"message": "late"}})
        assert wait_state(base, task_id, {"succeeded"})["result"] == {"echo": "late"}
        logged = attempts(worker)
        assert logged == list(range(1, len(logged) + 1))
        assert "Traceback" not in worker.output()
    finally:
        worker.stop()
        server.proc.stop()


def test_worker_health_check_fails_at_once_with_one_line_when_redis_is_down() -> None:
    env = relay_env(f"redis://127.0.0.1:{free_port()}/0")
    check = subprocess.run(
        [str(BIN / "arq"), "--check", "worker.settings"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 1
    output = check.stdout + check.stderr
    assert "Health check failed: Redis at 127.0.0.1:" in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
