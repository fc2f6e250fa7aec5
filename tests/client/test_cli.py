"""The ``relay`` command, run as a process against the real API and worker: its output and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import click
import pytest

from bench.harness.processes import BIN, free_port
from relay.cli.args import parse_value, task_arguments
from relay.cli.exitcodes import ExitCode
from tests.conftest import StartApi

RELAY = str(BIN / "relay")  # the console script pyproject installs
CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def cli_env(base: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return env | {"RELAY_URL": base}


def relay_cli(base: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELAY, *args], capture_output=True, text=True, timeout=timeout, env=cli_env(base))


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_submit_prints_the_id_then_follow_and_status_read_it(relay: str) -> None:
    submitted = relay_cli(relay, "submit", "echo", "--arg", "message=hi")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)
    followed = relay_cli(relay, "follow", task_id, "--json")
    assert followed.returncode == 0
    assert [e["type"] for e in ndjson(followed.stdout)] == ["started", "result", "end"]
    status = relay_cli(relay, "status", task_id, "--json")
    assert json.loads(status.stdout)["state"] == "succeeded"
    human = relay_cli(relay, "status", task_id)
    assert re.search(r"state\s+succeeded", human.stdout)
    assert re.search(r"result\s+\{\"echo\":\"hi\"\}", human.stdout)


def test_follow_prints_partials_then_the_result(relay: str) -> None:
    done = relay_cli(relay, "submit", "count", "--args-json", '{"n": 2, "interval": 0}', "--follow")
    assert done.returncode == ExitCode.SUCCEEDED, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ['partial {"i":1}', 'partial {"i":2}']
    assert json.loads("\n".join(lines[2:])) == {"count": 2, "sum": 3}


def test_json_follow_prints_the_raw_events(relay: str) -> None:
    done = relay_cli(relay, "submit", "sleep", "--arg", "seconds=0.2", "--arg", "steps=2", "--follow", "--json")
    assert done.returncode == 0, done.stderr
    events = ndjson(done.stdout)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in events] == ["started", "progress", "progress", "result", "end"]
    assert events[1]["data"] == {"current": 1, "total": 2, "message": "slept 1/2"}


def test_arg_values_are_typed_by_the_tasks_schema(relay: str) -> None:
    as_string = relay_cli(relay, "submit", "echo", "--arg", "message=123", "--follow", "--json")
    assert as_string.returncode == ExitCode.SUCCEEDED, as_string.stderr  # echo takes a string: 123 stays one
    assert ndjson(as_string.stdout)[-2]["data"] == {"echo": "123"}
    brackets = relay_cli(relay, "submit", "echo", "--arg", "message=[1, 2]", "--follow", "--json")
    assert ndjson(brackets.stdout)[-2]["data"] == {"echo": "[1, 2]"}
    numbers = relay_cli(relay, "submit", "count", "--arg", "n=2", "--arg", "interval=0", "--follow", "--json")
    assert numbers.returncode == ExitCode.SUCCEEDED, numbers.stderr  # count takes an int and a float
    assert ndjson(numbers.stdout)[-2]["data"] == {"count": 2, "sum": 3}


def test_an_arg_value_its_parameter_cannot_take_is_a_usage_error(relay: str) -> None:
    done = relay_cli(relay, "submit", "count", "--arg", "n=three")
    assert done.returncode == ExitCode.USAGE
    assert "n='three': n takes an integer, and 'three' is not one" in done.stderr


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("hello", "hello"),
        ("NaN", "NaN"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_parse_value(text: str, value: Any) -> None:
    assert parse_value(text) == value


def test_args_json_object_or_array_and_arg_wins() -> None:
    assert task_arguments(("b=3",), '{"a": 1, "b": 2}') == ([], {"a": 1, "b": 3})
    assert task_arguments((), "[1, 2]") == ([1, 2], {})
    with pytest.raises(click.BadParameter):
        task_arguments(("no-equals",), None)
    with pytest.raises(click.BadParameter):
        task_arguments((), "3")


def test_exit_code_for_a_failed_task(relay: str) -> None:
    done = relay_cli(relay, "submit", "fail", "--arg", "message=on purpose", "--follow")
    assert done.returncode == ExitCode.FAILED
    assert re.search(r"task [0-9a-f]{32} failed: DemoFailure: on purpose", done.stderr)
    as_json = relay_cli(relay, "submit", "fail", "--follow", "--json")
    assert as_json.returncode == ExitCode.FAILED
    assert ndjson(as_json.stdout)[-1]["data"] == {"state": "failed"}


def test_exit_code_for_an_aborted_task_and_cancel(relay: str) -> None:
    task_id = relay_cli(relay, "submit", "sleep", "--arg", "seconds=30", "--arg", "steps=30").stdout.strip()
    follower = subprocess.Popen(
        [RELAY, "follow", task_id, "--json"], stdout=subprocess.PIPE, text=True, env=cli_env(relay)
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # following: it has seen the task start
        assert first["type"] == "started"
        cancelled = relay_cli(relay, "cancel", task_id)
        assert (cancelled.returncode, cancelled.stdout.strip()) == (0, "aborting")
        assert follower.wait(30) == ExitCode.ABORTED
        assert ndjson(follower.stdout.read())[-1]["data"] == {"state": "aborted"}
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    again = relay_cli(relay, "cancel", task_id)
    assert again.returncode == ExitCode.REJECTED
    assert "409 not_abortable" in again.stderr


def test_exit_code_when_wait_runs_out(relay: str) -> None:
    done = relay_cli(relay, "submit", "sleep", "--arg", "seconds=2", "--follow", "--wait", "0.3")
    assert done.returncode == ExitCode.TIMEOUT
    task_id = re.search(r"task ([0-9a-f]{32}) did not end within 0.3s", done.stderr)
    assert task_id is not None
    assert f"relay cancel {task_id.group(1)}" in done.stderr
    assert relay_cli(relay, "follow", task_id.group(1), "--json").returncode == 0  # it went on and succeeded


def test_exit_codes_for_refusals_and_an_unreachable_api(relay: str) -> None:
    unknown = relay_cli(relay, "submit", "no_such_task")
    assert unknown.returncode == ExitCode.REJECTED
    assert "422 unknown_task: no task is registered as 'no_such_task'" in unknown.stderr
    missing = relay_cli(relay, "follow", "never-submitted")
    assert missing.returncode == ExitCode.REJECTED
    assert "404 task_not_found" in missing.stderr
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = relay_cli(relay, "--url", nowhere, "--retry-wait", "0.5", "submit", "echo")
    assert unreachable.returncode == ExitCode.UNAVAILABLE
    assert "connection_error: cannot talk to" in unreachable.stderr
    usage = relay_cli(relay, "submit", "echo", "--arg", "no-equals-sign")
    assert usage.returncode == ExitCode.USAGE
    assert "is not KEY=VALUE" in usage.stderr
    both = relay_cli(relay, "submit", "echo", "--delay", "5", "--run-at", "2030-01-01T00:00:00Z")
    assert both.returncode == ExitCode.USAGE
    assert "give delay or run_at, not both" in both.stderr


def test_exit_code_when_the_api_stays_unavailable(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=f"relay:client:{uuid.uuid4().hex[:8]}", RELAY_MAX_QUEUE_DEPTH="1")  # no worker
    assert relay_cli(base, "submit", "echo", "--delay", "60").returncode == 0  # fills the queue
    full = relay_cli(base, "--retry-wait", "1", "submit", "echo")  # Retry-After: 5 exceeds the budget
    assert full.returncode == ExitCode.UNAVAILABLE
    assert "503 queue_full" in full.stderr


def test_api_key_option_and_environment(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_API_KEYS="cli-key")
    assert relay_cli(base, "status", "t1").returncode == ExitCode.REJECTED  # 401
    with_key = relay_cli(base, "--api-key", "cli-key", "status", "t1")
    assert "404 task_not_found" in with_key.stderr  # past auth: the task just does not exist
    assert "pass it with --api-key KEY or set RELAY_API_KEY" in relay_cli(base, "status", "t1").stderr
    env = cli_env(base) | {"RELAY_API_KEY": "cli-key"}
    from_env = subprocess.run([RELAY, "status", "t1"], capture_output=True, text=True, env=env, timeout=60)
    assert "404 task_not_found" in from_env.stderr


def test_the_docs_list_every_exit_code() -> None:
    rows = re.findall(r"^\| `(\d+)` \| (\w+) \|", CLI_DOC.read_text(), flags=re.MULTILINE)
    assert {int(code): name for code, name in rows} == {c.value: c.name.lower() for c in ExitCode}


def test_ls_lists_newest_first(relay: str) -> None:
    ids = [relay_cli(relay, "submit", "fail", "--arg", f"message=ls {i}").stdout.strip() for i in range(2)]
    for task_id in ids:
        assert relay_cli(relay, "follow", task_id, "--json").returncode == ExitCode.FAILED
    listed = relay_cli(relay, "ls", "--state", "failed", "--task", "fail", "--limit", "2", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["id"] for v in ndjson(listed.stdout)] == ids[::-1]
    table = relay_cli(relay, "ls", "--state", "failed", "--limit", "2")
    assert ids[1] in table.stdout


def test_retry_reruns_an_aborted_task(relay: str) -> None:
    task_id = relay_cli(relay, "submit", "echo", "--arg", "message=again", "--delay", "60").stdout.strip()
    assert relay_cli(relay, "cancel", task_id).stdout.strip() == "aborted"
    retried = relay_cli(relay, "retry", task_id)
    assert (retried.returncode, retried.stdout.strip()) == (0, "queued"), retried.stderr
    followed = relay_cli(relay, "follow", task_id, "--json")
    assert followed.returncode == ExitCode.SUCCEEDED
    assert [e["data"]["state"] for e in ndjson(followed.stdout) if e["type"] == "end"] == ["aborted", "succeeded"]


@pytest.mark.parametrize(
    ("prop", "text", "value"),
    [
        ({"type": "string"}, "123", "123"),
        ({"type": "integer"}, "123", 123),
        ({"type": "integer"}, "1e3", 1000),
        ({"type": "number"}, "2.5", 2.5),
        ({"type": "boolean"}, "yes", True),
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, "null", None),
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, "7", 7),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "7", "7"),
        ({"type": "array", "items": {"type": "integer"}}, "[1, 2]", [1, 2]),
        ({"enum": ["a", "b"]}, "a", "a"),
        ({}, "42", 42),  # any type: guessed
    ],
)
def test_arg_typed_by_its_property(prop: dict[str, Any], text: str, value: Any) -> None:
    schema = {"properties": {"x": prop}}
    assert task_arguments((f"x={text}",), None, schema) == ([], {"x": value})


def test_arg_of_an_undeclared_name_is_guessed() -> None:
    assert task_arguments(("y=42",), None, {"properties": {"x": {"type": "string"}}}) == ([], {"y": 42})


def test_arg_that_cannot_be_its_type_names_both() -> None:
    with pytest.raises(click.BadParameter, match=r"x='1.5': x takes an integer or null, and '1.5' is not one"):
        task_arguments(("x=1.5",), None, {"properties": {"x": {"type": ["integer", "null"]}}})


def test_a_url_without_a_scheme_fails_at_once() -> None:
    done = relay_cli("http://unused", "--url", "localhost:8000", "submit", "echo", timeout=15)  # not 30 s of retries
    assert done.returncode == ExitCode.USAGE
    assert "must start with http:// or https://" in done.stderr
    assert "did you mean 'http://localhost:8000'?" in done.stderr
    assert "retry" not in done.stderr


def test_an_api_not_there_at_first_is_retried_briefly_with_a_line_per_retry() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = relay_cli(nowhere, "submit", "echo", timeout=20)  # the default --retry-wait is 30 s
    assert done.returncode == ExitCode.UNAVAILABLE
    retries = re.findall(r"^relay: connection_error: cannot talk to .*; retry (\d+) in ", done.stderr, re.MULTILINE)
    assert len(retries) >= 2, done.stderr
    assert retries == [str(n) for n in range(1, len(retries) + 1)]
    assert "Is the API running there? Point relay at it with --url URL or RELAY_URL." in done.stderr


def test_a_503_is_retried_with_a_line_per_retry(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=f"relay:client:{uuid.uuid4().hex[:8]}", RELAY_MAX_QUEUE_DEPTH="1")  # no worker
    assert relay_cli(base, "submit", "echo", "--delay", "60").returncode == 0  # fills the queue
    full = relay_cli(base, "--retry-wait", "6", "submit", "echo")  # Retry-After: 5 fits once
    assert full.returncode == ExitCode.UNAVAILABLE
    assert re.findall(r"^relay: (503 queue_full: .*); retry 1 in 5.0s", full.stderr, re.MULTILINE), full.stderr


def test_submit_with_a_queue_and_priority_and_status_shows_them(relay: str) -> None:
    argv = ["submit", "echo", "--arg", "message=urgent", "--queue", "default", "--priority", "9"]
    task_id = relay_cli(relay, *argv).stdout.strip()
    assert relay_cli(relay, "follow", task_id, "--json").returncode == ExitCode.SUCCEEDED
    view = json.loads(relay_cli(relay, "status", task_id, "--json").stdout)
    assert (view["queue"], view["priority"]) == ("default", 9)
    human = relay_cli(relay, "status", task_id).stdout
    assert re.search(r"^\s*queue\s+default\s*$", human, re.MULTILINE), human
    assert re.search(r"^\s*priority\s+9\s*$", human, re.MULTILINE), human
    refused = relay_cli(relay, "submit", "echo", "--queue", "gpu")
    assert refused.returncode == ExitCode.REJECTED
    assert "queue 'gpu' is not one of 'echo'" in refused.stderr, refused.stderr


def test_ls_in_a_pipe_prints_plain_whole_columns(relay: str) -> None:
    task_id = relay_cli(relay, "submit", "echo", "--arg", "message=ls in a pipe").stdout.strip()
    assert relay_cli(relay, "follow", task_id, "--json").returncode == ExitCode.SUCCEEDED
    listed = relay_cli(relay, "ls", "--task", "echo", "--limit", "1")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    (shown,) = ndjson(relay_cli(relay, "ls", "--task", "echo", "--limit", "1", "--json").stdout)
    named = ["queue", "priority"] if "queue" in shown else []  # an API with named queues (issue #21) sends both
    assert header.split() == ["task", *named, "state", "tries", "enqueued", "finished", "id"]
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
    queue = rf"{re.escape(str(shown['queue']))} +{shown['priority']} +" if named else ""
    assert re.fullmatch(rf"echo +{queue}succeeded +1 +{iso} +{iso} +{task_id}", row), row


def test_stats_shows_the_queue_and_its_workers(relay: str) -> None:
    shown = relay_cli(relay, "stats")
    assert shown.returncode == 0, shown.stderr
    for line in ("due", "running", "deferred"):
        assert re.search(rf"^{line} +\d+$", shown.stdout, re.MULTILINE), shown.stdout
    assert re.search(r"^workers +1 alive$", shown.stdout, re.MULTILINE), shown.stdout
    as_json = json.loads(relay_cli(relay, "stats", "--json").stdout)
    assert set(as_json["queue"]) == {"name", "due", "deferred", "running"}
    assert re.search(rf"^queue +{re.escape(as_json['queue']['name'])}$", shown.stdout, re.MULTILINE)


def test_workers_lists_the_live_workers(relay: str) -> None:
    listed = relay_cli(relay, "workers", "--json")
    assert listed.returncode == 0, listed.stderr
    (worker,) = ndjson(listed.stdout)
    assert worker["status"] == "alive"
    table = relay_cli(relay, "workers")
    header, row = table.stdout.splitlines()
    queues = ["queues"] if "queues" in worker else []  # the named queues it serves (issue #21)
    assert header.split() == ["id", "status", "running", *queues, "seen", "started", "outcomes"]
    assert row.startswith(worker["id"])
    served = f" +{re.escape(','.join(worker['queues']))}" if queues else ""
    assert re.search(rf" alive +\d+/{worker['concurrency']}{served} ", row), row


def test_workflow_submit_follow_status_cancel_and_retry(relay: str, tmp_path: Path) -> None:
    canvas = '{"chain": [{"task": "add", "args": [2, 2]}, {"task": "mul", "args": [4]}]}'
    followed = relay_cli(relay, "workflow", "submit", canvas, "--follow")
    assert followed.returncode == ExitCode.SUCCEEDED, followed.stderr
    assert followed.stdout.splitlines()[-1] == "workflow succeeded: 16.0"
    flow = relay_cli(relay, "workflow", "submit", canvas).stdout.strip()
    events = ndjson(relay_cli(relay, "workflow", "follow", flow, "--json").stdout)
    assert (events[0]["type"], events[-1]["type"]) == ("workflow_started", "workflow_end")
    tree = relay_cli(relay, "workflow", "status", flow)
    assert re.search(r"0\. add succeeded", tree.stdout)
    assert re.search(r"1\. mul succeeded", tree.stdout)
    assert json.loads(relay_cli(relay, "workflow", "status", flow, "--json").stdout)["result"] == 16

    mapped = '{"chain": [{"task": "numbers", "args": [3]}, {"map": "add", "args": [10]}, {"task": "tsum"}]}'
    flow = relay_cli(relay, "workflow", "submit", mapped).stdout.strip()  # a map over the value before it
    lines = relay_cli(relay, "workflow", "follow", flow).stdout.splitlines()
    assert "step 1 map add: expanded into steps 3 to 5" in lines
    assert lines[-1] == "workflow succeeded: 36.0"
    tree = relay_cli(relay, "workflow", "status", flow).stdout
    assert re.search(r"1\. map add succeeded", tree)
    assert [int(n) for n in re.findall(r"(\d)\. add succeeded", tree)] == [3, 4, 5]  # its members

    marker = tmp_path / "pass"
    steps = [{"task": "inc", "args": [1]}, {"task": "fails_until", "kwargs": {"marker": str(marker)}}]
    (tmp_path / "canvas.json").write_text(json.dumps({"chain": steps}))
    flow = f"cli-{uuid.uuid4().hex[:8]}"
    failed = relay_cli(relay, "workflow", "submit", "--file", str(tmp_path / "canvas.json"), "--id", flow, "--follow")
    assert failed.returncode == ExitCode.FAILED
    assert f"step 1 {flow}:1: started (try 1)" in failed.stdout
    marker.write_text("ok")
    assert relay_cli(relay, "workflow", "retry", flow).returncode == 0
    assert relay_cli(relay, "workflow", "follow", flow).returncode == ExitCode.SUCCEEDED

    slow = relay_cli(relay, "workflow", "submit", '{"chain": [{"task": "sleeps", "args": [30]}]}').stdout.strip()
    assert relay_cli(relay, "workflow", "cancel", slow).stdout.strip() in ("aborted", "aborting")
    assert relay_cli(relay, "workflow", "follow", slow).returncode == ExitCode.ABORTED
