"""Configuration as an operator meets it: the real ``arq worker.settings`` and ``sanic ...`` commands with bad
variables say so in one line per variable (no traceback, exit code 78); DEBUG and the access log say more."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from bench.harness.client import read_events, submit, submit_ok
from bench.harness.processes import BIN, REPO, free_port, wait_until
from tests.conftest import StartApi, StartWorker
from tests.support.environment import relay_env

WORKER = [str(BIN / "arq"), "worker.settings"]
API = [str(BIN / "sanic"), "api.app:create_app", "--factory", "--single-process", "--no-motd", "--port"]


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command that must refuse to start; nothing is listening, so it could not start anyway."""
    environment = relay_env(f"redis://127.0.0.1:{free_port()}/0", **env)
    return subprocess.run(argv, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("role", ["worker", "api"])
@pytest.mark.parametrize(
    ("env", "lines"),
    [
        ({"RELAY_MAX_QUEUE_DEPTH": "lots"}, ["RELAY_MAX_QUEUE_DEPTH='lots' is invalid: expected an integer >= 1"]),
        (
            {"RELAY_REDIS_URL": "localhost:6380"},
            [
                "RELAY_REDIS_URL='localhost:6380' is invalid: expected a URL starting with redis://, rediss:// "
                "or unix:// (e.g. redis://localhost:6380)"
            ],
        ),
        (
            {"RELAY_LOG_LEVEL": "verbose", "RELAY_WORKER_CONCURRENCY": "0"},
            [
                "RELAY_WORKER_CONCURRENCY='0' is invalid: expected an integer >= 1",
                "RELAY_LOG_LEVEL='verbose' is invalid: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
            ],
        ),
    ],
)
def test_bad_variables_are_one_line_each_and_exit_78(role: str, env: dict[str, str], lines: list[str]) -> None:
    argv = WORKER if role == "worker" else [*API, str(free_port())]
    done = run(argv, **env)
    assert done.returncode == 78
    assert done.stderr.splitlines() == lines
    assert done.stdout == ""


UNANNOTATED = """\
from worker.tasks import registry


@registry.task()
def resize(image: str) -> str:
    return image
"""


@pytest.mark.parametrize(
    ("modules", "line"),
    [
        (
            "",
            "no tasks to run: set RELAY_TASK_MODULES to the modules that register them "
            "(RELAY_TASK_MODULES=worker.tasks.demo runs the demo tasks; see docs/tasks.md)",
        ),
        (
            "worker.tasks.dmeo",
            "RELAY_TASK_MODULES names 'worker.tasks.dmeo', which cannot be imported: No module named "
            "'worker.tasks.dmeo' (did you mean 'worker.tasks.demo'?)",
        ),
        (
            "unannotated_tasks",
            "{path}:4: task 'resize': the first parameter must be annotated TaskContext, e.g. "
            "`def resize(task: TaskContext, ...)`",
        ),
        (
            "quiet_tasks",
            "RELAY_TASK_MODULES='quiet_tasks' registers no task: set RELAY_TASK_MODULES to the modules that "
            "register them with @registry.task() (from worker.tasks import registry)",
        ),
    ],
)
def test_worker_start_up_mistakes_are_one_line_and_exit_78(tmp_path: Path, modules: str, line: str) -> None:
    # They were 37-line tracebacks ending in the same message (the literal command people type: arq worker.settings).
    (tmp_path / "unannotated_tasks.py").write_text(UNANNOTATED)
    (tmp_path / "quiet_tasks.py").write_text("ANSWER = 42\n")
    done = run(WORKER, RELAY_TASK_MODULES=modules, PYTHONPATH=str(tmp_path))
    assert done.returncode == 78
    assert done.stderr.splitlines() == [line.format(path=tmp_path / "unannotated_tasks.py")]
    assert done.stdout == ""


SECRETS = {
    "RELAY_REDIS_URL": "redis://relay:url-s3cret-pw@127.0.0.1:{port}/0",
    "RELAY_REDIS_PASSWORD": "redis-s3cret-pw",
    "RELAY_REDIS_SENTINEL_PASSWORD": "sentinel-s3cret-pw",
    "RELAY_API_KEYS": "ops:api-s3cret-key",
    "RELAY_SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://x/;SharedAccessKey=sb-s3cret-key",
}


@pytest.mark.parametrize("role", ["worker", "api"])
@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"RELAY_MAX_BODY_BYTES": "8192"},
            "RELAY_MAX_ARGS_BYTES and RELAY_MAX_BODY_BYTES are invalid together: RELAY_MAX_ARGS_BYTES (16384) "
            "must not exceed RELAY_MAX_BODY_BYTES (8192)",
        ),
        (
            {"RELAY_REDIS_WAIT_REPLICAS": "1", "RELAY_REDIS_WAIT_TIMEOUT_MS": "5000"},
            "RELAY_REDIS_WAIT_TIMEOUT_MS and RELAY_REDIS_TIMEOUT_SECONDS are invalid together: "
            "RELAY_REDIS_WAIT_TIMEOUT_MS (5000) must be below RELAY_REDIS_TIMEOUT_SECONDS (2.0 s = 2000 ms)",
        ),
    ],
)
def test_a_check_across_variables_names_them_and_shows_no_secret(role: str, env: dict[str, str], line: str) -> None:
    # pydantic gives such a check every variable set as its input: none of them may reach the output.
    secrets = {**SECRETS, "RELAY_REDIS_URL": SECRETS["RELAY_REDIS_URL"].format(port=free_port())}
    argv = WORKER if role == "worker" else [*API, str(free_port())]
    done = run(argv, **secrets, **env)
    assert done.returncode == 78
    assert done.stderr.splitlines() == [line]
    assert "s3cret" not in done.stdout + done.stderr


def test_deprecated_and_mistyped_variables_are_warned_about(spawn_worker: StartWorker, spawn_api: StartApi) -> None:
    env = {"RELAY_MAX_TRIES": "3", "RELAY_HEARTBEAT_SECOND": "1"}
    worker = spawn_worker(**env)
    api, _ = spawn_api(**env)
    for output in (worker.output(), api.output()):
        assert "WARNING relay.settings: RELAY_MAX_TRIES is deprecated: rename it RELAY_MAX_PICKUPS" in output
        assert (
            "WARNING relay.settings: RELAY_HEARTBEAT_SECOND is not a Relay setting; it is ignored "
            "(did you mean RELAY_HEARTBEAT_SECONDS?)"
        ) in output


def test_debug_logs_submits_refusals_and_streams(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    spawn_worker()
    api, base = spawn_api(RELAY_LOG_LEVEL="debug")
    task_id = submit_ok(base, {"task": "echo"})
    assert read_events(base, task_id)[-1]["type"] == "end"
    assert submit(base, {"task": "nope"}).status_code == 422
    wait_until(lambda: "stream of" in api.output() and "closed" in api.output(), 10, "the stream's close log")
    output = api.output()
    assert f"DEBUG relay.api: submit {task_id}: task echo, created=True, queued" in output
    assert "DEBUG relay.api: POST /tasks refused: UnknownTask: no task is registered as 'nope'" in output
    assert f"DEBUG relay.api.stream: stream of {task_id} opened (NDJSON, after seq 0); 1 open" in output
    assert f"DEBUG relay.api.stream: stream of {task_id} closed after 3 frames (last: end)" in output


def test_info_level_and_no_access_log_by_default(spawn_api: StartApi) -> None:
    api, base = spawn_api()
    assert httpx.get(f"{base}/nope", timeout=10).status_code == 404
    assert "DEBUG" not in api.output()
    assert "GET http" not in api.output()


def test_access_log_when_enabled(spawn_api: StartApi) -> None:
    api, base = spawn_api(RELAY_ACCESS_LOG="true")
    assert httpx.get(f"{base}/nope", timeout=10).status_code == 404
    wait_until(lambda: f"GET {base}/nope 404" in api.output(), 10, "the access log line")


def test_processes_log_which_redis_they_use(spawn_api: StartApi, spawn_worker: StartWorker, redis_url: str) -> None:
    # A queue of its own: a worker on the shared default queue would pick up other tests' long jobs and
    # spend its grace period on them when it stops.
    queue = f"relay:which-redis:{uuid.uuid4().hex[:8]}"
    api, _ = spawn_api(RELAY_QUEUE_NAME=queue)
    assert f"using Redis at {redis_url}" in api.output()
    worker = spawn_worker(RELAY_QUEUE_NAME=queue)
    assert f"queue {queue} (serving default), using Redis at {redis_url}, on uvloop" in worker.output()


@pytest.mark.parametrize(
    ("role", "variable", "value", "line"),
    [
        # inf passed gt=0: a traceback at start (exit 1), or an API that starts and then answers every submit 500
        ("api", "RELAY_HEARTBEAT_SECONDS", "inf", "expected a number > 0 and <= 3600"),
        ("api", "RELAY_JOB_TIMEOUT_SECONDS", "inf", "expected a number > 0 and <= 2592000"),
        ("worker", "RELAY_JOB_TIMEOUT_SECONDS", "inf", "expected a number > 0 and <= 2592000"),
        ("worker", "RELAY_LEASE_SECONDS", "inf", "expected a number >= 1 and <= 86400"),
        ("worker", "RELAY_POLL_DELAY_SECONDS", "nan", "expected a number > 0 and <= 3600"),
        ("worker", "RELAY_REDIS_TIMEOUT_SECONDS", "inf", "expected a number > 0 and <= 3600"),
        # huge but finite: a task that could never record its outcome, or never be taken over
        ("worker", "RELAY_RESULT_TTL_SECONDS", "10000000000000000", "expected an integer >= 1 and <= 315360000"),
        ("worker", "RELAY_LEASE_SECONDS", "1e300", "expected a number >= 1 and <= 86400"),
    ],
)
def test_infinite_or_huge_durations_are_one_line_and_exit_78(role: str, variable: str, value: str, line: str) -> None:
    argv = WORKER if role == "worker" else [*API, str(free_port())]
    done = run(argv, **{variable: value})
    assert done.returncode == 78, (done.returncode, done.stderr[-600:])
    assert done.stderr.splitlines() == [f"{variable}='{value}' is invalid: {line}"]


@pytest.mark.parametrize(
    ("keys", "line"),
    [
        ("ops:api-s3cret-1,bad name:api-s3cret-2", "entry 2: a name is letters, digits, '_', '.', '-' (max 64)"),
        ("api-s3cret-1,api-s3cret-1", "entry 2: this key is used twice"),
        ("anonymous:api-s3cret-1", "entry 1: the name 'anonymous' is reserved"),
    ],
)
def test_a_bad_api_key_list_is_one_line_and_exit_78(keys: str, line: str) -> None:
    # It was found by create_app, after the settings: Sanic's traceback box, and exit code 0.
    done = run([*API, str(free_port())], RELAY_API_KEYS=keys)
    assert done.returncode == 78, (done.returncode, done.stderr[-800:])
    assert done.stderr.splitlines() == [f"RELAY_API_KEYS=(hidden) is invalid: {line}"]
    assert "s3cret" not in done.stdout + done.stderr
