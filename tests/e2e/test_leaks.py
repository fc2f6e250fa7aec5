"""What must never leak: Redis's address from readiness, tracebacks and internal paths from errors,
and tasks' arguments and results from the worker's log. Real processes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
import pytest

from bench.harness.client import submit, submit_ok, wait_state
from bench.harness.processes import REPO, ManagedProcess, wait_until
from tests.conftest import StartApi, StartWorker

# Not imported: the faulty app is loaded only by the API process the test starts.
FAULTY_FACTORY = "tests.support.faulty_app:create_app"
INTERNAL_PATH = str(REPO / "tests" / "support" / "faulty_app.py")


def test_readiness_does_not_tell_where_redis_is(
    spawn_api: StartApi, spawn_redis: Callable[..., tuple[ManagedProcess, str]]
) -> None:
    server, url = spawn_redis()
    api, base = spawn_api(url=url)
    port = url.rsplit(":", 1)[1].split("/")[0]
    server.stop()
    response = httpx.get(f"{base}/health/ready", timeout=10)
    assert (response.status_code, response.json()) == (503, {"status": "redis_unavailable"})
    assert port not in response.text
    wait_until(lambda: f"127.0.0.1:{port}" in api.output(), 10, "the detail in the API's own log")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/_test/raises", None),
        ("GET", "/_test/returns-no-response", None),
    ],
)
def test_server_errors_carry_no_traceback_or_path(
    spawn_api: StartApi, method: str, path: str, body: dict[str, object] | None
) -> None:
    api, base = spawn_api(factory=FAULTY_FACTORY)
    response = httpx.request(method, f"{base}{path}", json=body, timeout=10)
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error", "details": None}}
    assert "Traceback" not in response.text
    assert "/" not in response.text
    # The operator still learns what happened, in the API's log.
    wait_until(lambda: INTERNAL_PATH in api.output(), 10, "the failure in the API's log")
    assert submit(base, {"task": "echo", "delay_seconds": 600}).status_code == 202  # and it keeps serving


SECRET = "sk_live_4f9a2c7e51"  # echo returns it too, so it is both an argument and a result
DURATION = re.compile(r"\d+(\.\d+)?\s?(ms|s)\b")


def test_worker_log_shows_no_task_values_at_the_default_level(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    """arq logs the first 80 characters of every job's arguments and result at INFO, and arguments can
    carry secrets. At the default level a worker must log what ran, not with what: the task's id, name,
    timing and outcome (values only with RELAY_LOG_TASK_VALUES=true)."""
    queue = f"relay:leaks:{uuid.uuid4().hex[:8]}"
    worker = spawn_worker(RELAY_QUEUE_NAME=queue)
    api, base = spawn_api(RELAY_QUEUE_NAME=queue)
    task_id = submit_ok(base, {"task": "echo", "kwargs": {"message": SECRET}})
    assert wait_state(base, task_id, {"succeeded"})["result"] == {"echo": SECRET}

    def lines_about_the_task() -> list[str]:
        return [line for line in worker.output().splitlines() if task_id in line]

    wait_until(
        lambda: any("succeeded" in line for line in lines_about_the_task()),
        10,
        "the worker to log the task's end",
    )
    assert SECRET not in worker.output()
    assert SECRET not in api.output()
    ended = [line for line in lines_about_the_task() if "succeeded" in line]
    assert ended, lines_about_the_task()
    assert "echo" in ended[0]
    assert DURATION.search(ended[0]), ended[0]


def test_worker_logs_task_values_only_when_asked(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    """The opt-in for debugging (``RELAY_LOG_TASK_VALUES=true``): the start line has the arguments and the end
    line the result; the API still logs neither."""
    queue = f"relay:leaks:{uuid.uuid4().hex[:8]}"
    worker = spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_LOG_TASK_VALUES="true")
    api, base = spawn_api(RELAY_QUEUE_NAME=queue)
    task_id = submit_ok(base, {"task": "echo", "kwargs": {"message": SECRET}})
    wait_state(base, task_id, {"succeeded"})

    def lines(word: str) -> list[str]:
        return [line for line in worker.output().splitlines() if task_id in line and word in line]

    wait_until(lambda: bool(lines("succeeded")), 10, "the worker to log the task's end")
    assert SECRET in lines("started")[0]
    assert SECRET in lines("succeeded")[0]
    assert SECRET not in api.output()
