"""``relay follow`` and ``relay workflow follow`` against a stubbed API (``httpx.MockTransport``): what a person
sees (a step's message as text), what a script reads (stdout stays NDJSON under ``--json``), and how long an API
that answered, then restarts, is waited for. The end-to-end tests are in test_cli.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from relay.cli import app
from relay.cli.exitcodes import ExitCode
from relay.client import Client

FLOW = "wf1"
NDJSON = {"content-type": "application/x-ndjson"}
Handler = Callable[[httpx.Request], httpx.Response]


def line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``relay ARGS`` in-process, its client talking to ``handler``; stdout and stderr kept apart."""

    def invoke(handler: Handler, *args: str) -> Result:
        def stubbed(url: str | None, key: str | None, **kwargs: Any) -> Client:
            return Client(url, key, transport=httpx.MockTransport(handler), **kwargs)

        monkeypatch.setattr(app, "Client", stubbed)
        return CliRunner().invoke(app.cli, ["--url", "http://relay.test", *args])

    return invoke


def progress(message: str) -> dict[str, Any]:
    data = {"current": 1, "total": 2, "message": message}
    return {"seq": 1, "type": "progress", "task_id": "s0", "step": 0, "ts": 0, "data": data}


WORKFLOW_END = {
    "seq": 2,
    "type": "workflow_end",
    "workflow_id": FLOW,
    "task_id": FLOW,
    "ts": 0,
    "data": {"state": "succeeded", "result": 1},
}


def workflow_stream(*frames: dict[str, Any]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/workflows/{FLOW}":
            return httpx.Response(200, json={"id": FLOW, "state": "succeeded", "result": 1, "tree": {}})
        return httpx.Response(200, content=b"".join(line(f) for f in frames), headers=NDJSON)

    return handler


@pytest.mark.parametrize("message", ["copying [/data/in.csv]", "[bold]step[/bold] 1"])
def test_workflow_follow_shows_a_step_message_as_text_not_markup(relay: Callable[..., Result], message: str) -> None:
    done = relay(workflow_stream(progress(message), WORKFLOW_END), "workflow", "follow", FLOW)
    assert done.exception is None or isinstance(done.exception, SystemExit), repr(done.exception)
    assert done.exit_code == ExitCode.SUCCEEDED
    assert f"step 0 s0: 1/2 {message}" in done.stdout


def test_ctrl_c_in_workflow_follow_json_keeps_stdout_ndjson(relay: Callable[..., Result]) -> None:
    def body() -> Iterator[bytes]:
        yield line(progress("half"))
        raise KeyboardInterrupt

    done = relay(
        lambda request: httpx.Response(200, content=body(), headers=NDJSON), "workflow", "follow", FLOW, "--json"
    )
    assert done.exit_code == ExitCode.INTERRUPTED
    assert [json.loads(text)["type"] for text in done.stdout.splitlines()] == ["progress"]
    assert f"Stopped following workflow {FLOW}" in done.stderr


def test_wait_running_out_in_workflow_follow_json_keeps_stdout_ndjson_and_says_workflow(
    relay: Callable[..., Result],
) -> None:
    heartbeats = line({"type": "heartbeat"}) * 3

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=heartbeats, headers=NDJSON)

    done = relay(handler, "workflow", "follow", FLOW, "--json", "--wait", "0.2")
    assert done.exit_code == ExitCode.TIMEOUT
    assert done.stdout == ""
    assert f"workflow {FLOW} did not end within 0.2s" in done.stderr
    assert f"relay workflow cancel {FLOW}" in done.stderr


def test_follow_waits_out_an_api_restart_once_the_api_has_answered(
    relay: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relay follow ID`` (its first request is the stream): the API answers, then restarts for longer than
    the first-contact wait; ``--retry-wait`` applies, as docs/cli.md says, not the first contact's 3 s."""
    slept: list[float] = []
    monkeypatch.setattr("relay.client.sync.time.sleep", slept.append)
    monkeypatch.setattr("relay.client.retry.random.random", lambda: 0.999)
    end = {"seq": 1, "type": "end", "task_id": "t1", "ts": 0, "data": {"state": "succeeded"}}
    answers: list[httpx.Response | Exception] = [
        httpx.Response(200, content=b"", headers=NDJSON),  # answered, cut before its first heartbeat
        *[httpx.ConnectError("connection refused")] * 4,  # the restart: 0.5 + 1 + 2 + 4 s of backoff
        httpx.Response(200, content=line(end), headers=NDJSON),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tasks/t1":  # read after the end: is it final?
            return httpx.Response(200, json={"id": "t1", "task": "echo", "state": "succeeded"})
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    done = relay(handler, "--retry-wait", "30", "follow", "t1", "--json")
    assert done.exit_code == ExitCode.SUCCEEDED, done.output
    assert sum(slept) > app.FIRST_CONTACT_WAIT_SECONDS
    assert [json.loads(text)["type"] for text in done.stdout.splitlines()] == ["end"]


def test_a_success_that_is_not_relays_json_exits_unavailable_and_says_so(relay: Callable[..., Result]) -> None:
    """A portal's or another server's 200 page: a clear error and exit 5, not a JSONDecodeError traceback."""
    done = relay(lambda request: httpx.Response(200, text="<html>Sign in to the Wi-Fi</html>"), "status", "t1")
    assert done.exit_code == ExitCode.UNAVAILABLE, repr(done.exception)
    assert "not_relay_answer" in done.stderr
    assert "Sign in to the Wi-Fi" in done.stderr
