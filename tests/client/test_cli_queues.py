"""Named queues and priorities (issue #21) in the ``relay`` command, against a stubbed API (``httpx.MockTransport``):
what ``submit --queue/--priority`` sends, and how ``status``, ``ls`` and ``stats`` show the fields the API adds,
and show nothing new when an older API leaves them out. The end-to-end tests are in test_cli.py."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from relay.cli import app
from relay.cli.exitcodes import ExitCode
from relay.cli.tables import print_table
from relay.cli.views import task_table
from relay.client import Client, TaskView

TASK_ID = "0123456789abcdef0123456789abcdef"
Handler = Callable[[httpx.Request], httpx.Response]


def view(**extra: Any) -> dict[str, Any]:
    base = {"id": TASK_ID, "task": "resize", "state": "queued", "tries": 0, "arguments": {"url": "a.png"}}
    return base | {"enqueued_at": "2030-01-02T03:04:05+00:00"} | extra


class Api:
    """Answers by method and path; keeps every request it got."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"error": {"code": "route_not_found", "message": "no", "details": None}})
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request) if callable(answer) else httpx.Response(200, json=answer)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``relay ARGS`` in-process, its client talking to the given ``Api``."""

    def invoke(api: Api, *args: str) -> Result:
        def stubbed(url: str | None, key: str | None, **kwargs: Any) -> Client:
            return Client(url, key, transport=httpx.MockTransport(api), **kwargs)

        monkeypatch.setattr(app, "Client", stubbed)
        return CliRunner().invoke(app.cli, ["--url", "http://relay.test", *args], catch_exceptions=False)

    return invoke


def shown(output: str, name: str, value: str) -> bool:
    """Whether ``relay status`` printed the row ``name  value`` (rich pads the table's lines)."""
    return re.search(rf"^\s*{re.escape(name)}\s+{re.escape(value)}\s*$", output, re.MULTILINE) is not None


def accepted(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(202, json={"id": body["id"], "task": body["task"], "state": "queued", "created": True})


def test_submit_sends_the_queue_and_priority_given(run: Callable[..., Result]) -> None:
    api = Api({("POST", "/tasks"): accepted})
    done = run(api, "submit", "resize", "--args-json", '{"url": "a.png"}', "--queue", "gpu", "--priority", "7")
    assert done.exit_code == ExitCode.SUCCEEDED, done.output
    lowest = run(api, "submit", "resize", "--priority", "0")
    plain = run(api, "submit", "resize")
    assert (lowest.exit_code, plain.exit_code) == (0, 0)
    first, second, third = api.bodies()
    assert (first["queue"], first["priority"], first["kwargs"]) == ("gpu", 7, {"url": "a.png"})
    assert done.output.strip() == first["id"]
    assert second["priority"] == 0
    assert "queue" not in second
    assert "queue" not in third  # the task's own queue and priority apply
    assert "priority" not in third


@pytest.mark.parametrize("priority", ["10", "-1", "high"])
def test_a_priority_outside_0_to_9_is_a_usage_error_and_sends_nothing(
    run: Callable[..., Result], priority: str
) -> None:
    api = Api({("POST", "/tasks"): accepted})
    done = run(api, "submit", "resize", "--priority", priority)
    assert done.exit_code == ExitCode.USAGE
    assert "--priority" in done.output
    assert api.requests == []


def test_a_queue_the_task_does_not_allow_is_the_apis_422(run: Callable[..., Result]) -> None:
    refusal = {
        "error": {
            "code": "invalid_request",
            "message": "task 'resize' cannot go to queue 'cpu': it allows 'gpu', 'gpu-spot'",
            "details": None,
        }
    }
    api = Api({("POST", "/tasks"): httpx.Response(422, json=refusal)})
    done = run(api, "submit", "resize", "--queue", "cpu")
    assert done.exit_code == ExitCode.REJECTED
    assert "cannot go to queue 'cpu'" in done.output


def test_status_shows_queue_priority_and_why_it_waits(run: Callable[..., Result]) -> None:
    waiting = "concurrency limit full: 3 running for customer_id=42"
    api = Api({("GET", f"/tasks/{TASK_ID}"): view(queue="gpu", priority=5, waiting_reason=waiting)})
    done = run(api, "status", TASK_ID)
    assert done.exit_code == 0, done.output
    assert shown(done.output, "queue", "gpu"), done.output
    assert shown(done.output, "priority", "5"), done.output
    assert shown(done.output, "waiting", waiting), done.output
    as_json = run(api, "status", TASK_ID, "--json")
    assert json.loads(as_json.output)["queue"] == "gpu"


def test_status_from_an_api_without_queues_shows_no_queue_rows(run: Callable[..., Result]) -> None:
    done = run(Api({("GET", f"/tasks/{TASK_ID}"): view()}), "status", TASK_ID)
    assert done.exit_code == 0, done.output
    assert shown(done.output, "state", "queued"), done.output
    assert not re.search(r"^\s*(queue|priority)\s", done.output, re.MULTILINE), done.output


def test_ls_in_a_pipe_shows_the_queue_and_priority_columns(run: Callable[..., Result]) -> None:
    page = {"tasks": [view(queue="gpu-spot", priority=9), view(id="t2", queue="default", priority=0)]}
    done = run(Api({("GET", "/tasks"): page}), "ls")
    assert done.exit_code == 0, done.output
    header, first, second = done.output.splitlines()
    assert header.split() == ["task", "queue", "priority", "state", "tries", "enqueued", "finished", "id"]
    assert first.split() == ["resize", "gpu-spot", "9", "queued", "0", "2030-01-02T03:04:05+00:00", TASK_ID]
    assert second.split()[:3] == ["resize", "default", "0"]


def test_ls_from_an_api_without_queues_keeps_its_columns(run: Callable[..., Result]) -> None:
    done = run(Api({("GET", "/tasks"): {"tasks": [view()]}}), "ls")
    assert done.output.splitlines()[0].split() == ["task", "state", "tries", "enqueued", "finished", "id"]


@pytest.mark.parametrize(
    ("width", "columns"),
    [(120, ["queue", "priority"]), (100, ["queue"]), (80, [])],
)
def test_a_narrow_terminal_leaves_out_the_priority_then_the_queue(width: int, columns: list[str]) -> None:
    views = [TaskView.from_json(view(task="resize_image", queue="gpu-spot", priority=5))]
    screen = io.StringIO()
    print_table(Console(file=screen, width=width, force_terminal=True, color_system=None), *task_table(views))
    header, _rule, row, *wrapped = screen.getvalue().splitlines()
    assert [h for h in header.split() if h in ("queue", "priority")] == columns
    assert TASK_ID in row
    if width > 80:
        assert not wrapped  # what is shown fits: no cell wraps onto a second line


STATS_QUEUE = {"name": "relay:queue", "due": 4, "deferred": 1, "running": 3}


def test_stats_lists_each_named_queue(run: Callable[..., Result]) -> None:
    stats = {
        "queue": STATS_QUEUE,
        "workers": [],
        "queues": [
            {"name": "default", "due": 1, "deferred": 1, "running": 2},
            {"name": "gpu", "due": 3, "deferred": 0, "running": 1},
        ],
    }
    done = run(Api({("GET", "/stats"): stats}), "stats")
    assert done.exit_code == 0, done.output
    assert re.search(r"^queue +relay:queue$", done.output, re.MULTILINE), done.output
    assert re.search(r"^queue default +1 due, 1 deferred, 2 running$", done.output, re.MULTILINE), done.output
    assert re.search(r"^queue gpu +3 due, 0 deferred, 1 running$", done.output, re.MULTILINE), done.output
    older = run(Api({("GET", "/stats"): {"queue": stats["queue"], "workers": []}}), "stats")
    assert not re.search(r"^queue \S+ ", older.output, re.MULTILINE), older.output


def test_workers_shows_the_queues_each_serves(run: Callable[..., Result]) -> None:
    worker = {"id": "gpu-1", "status": "alive", "running": 1, "concurrency": 1, "seen_seconds_ago": 2, "totals": {}}
    stats = {"queue": STATS_QUEUE, "workers": [worker | {"queues": ["gpu", "gpu-spot"]}]}
    done = run(Api({("GET", "/stats"): stats}), "workers")
    header, row = done.output.splitlines()
    assert header.split() == ["id", "status", "running", "queues", "seen", "started", "outcomes"]
    assert row.split()[:4] == ["gpu-1", "alive", "1/1", "gpu,gpu-spot"]
    older = run(Api({("GET", "/stats"): {"queue": STATS_QUEUE, "workers": [worker]}}), "workers")
    assert "queues" not in older.output.splitlines()[0].split()
