"""The dashboard at /dashboard/, in real headless Chromium (Debian's, driven by Playwright) against a real API
and worker: the overview (queue, workers, recent and failed tasks) refreshes live; a task submitted from the
CLI progresses live on its page; a task submitted from the page is cancelled from it; a failed task is
retried from the failed list and runs again; with API keys the page asks for one once, keeps it out of
every URL, and sends it on every data call; task values are shown as text, never run as HTML.
Screenshots are kept in build/screenshots/<test>/ (git-ignored), overwritten by the next run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect

from bench.harness.client import state, submit_ok, wait_state
from bench.harness.processes import BIN, REPO, free_port
from tests.conftest import StartApi, StartWorker
from tests.support.chromium import chromium

RELAY_CLI = str(BIN / "relay")
API_KEY = "dashboard-key-0001"
LIVE = 30_000  # ms: long enough for a loaded machine, never a measure of speed


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, spawn_api: StartApi) -> Iterator[Page]:
    """A fresh page, closed before the test's APIs stop (it asks for ``spawn_api`` so it is torn down first): a page
    still following a task that never ends would hold a stopping API in its drain (RELAY_API_DRAIN_SECONDS, 10 s)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    """Where a test keeps its screenshots: a fixed place, so they outlive pytest's temporary directories."""
    folder = REPO / "build" / "screenshots" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def queue() -> str:
    return f"relay:dash:{uuid.uuid4().hex[:8]}"


def seen(page: Page) -> dict[str, Any]:
    value: dict[str, Any] = page.evaluate("() => window.relayDashboard")
    return value


def task_row(page: Page, table: str, task_id: str) -> Any:
    return page.locator(f"#{table} tbody tr[data-task-id='{task_id}']")


def test_the_overview_shows_the_queue_the_workers_and_the_tasks_live(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker, shots: Path
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(offers=False, **env)  # the real worker below offers the tasks
    metrics_port = free_port()
    worker = spawn_worker(RELAY_WORKER_METRICS_PORT=str(metrics_port), **env)
    done = [submit_ok(base, {"task": "echo", "args": [f"hello {i}"]}) for i in range(2)]
    failed = submit_ok(base, {"task": "fail", "kwargs": {"message": "boom"}})
    later = submit_ok(base, {"task": "echo", "args": ["later"], "delay_seconds": 600})
    for task_id in [*done, failed]:
        wait_state(base, task_id, {"succeeded", "failed"})

    page.goto(f"{base}/dashboard/")
    workers = page.locator("#workers tbody tr")
    expect(workers).to_have_count(1, timeout=LIVE)
    expect(workers.first).to_contain_text(str(worker.pid))
    expect(workers.first).to_contain_text("alive")
    expect(workers.first).to_contain_text(str(metrics_port))
    expect(workers.first.locator("td.queue-column")).to_have_text("default")  # the named queues it serves
    expect(page.locator("#queue-deferred")).to_have_text("1", timeout=LIVE)
    expect(page.locator("#worker-count")).to_have_text("1")
    for task_id in [*done, failed, later]:
        expect(task_row(page, "recent", task_id)).to_have_count(1, timeout=LIVE)
    expect(task_row(page, "recent", later)).to_contain_text("deferred")
    expect(task_row(page, "recent", later).locator("td.queue-column")).to_have_text(["default", "0"])
    expect(task_row(page, "failed", failed)).to_contain_text("DemoFailure: boom")
    # The named queue the worker serves, with the deferred task in it (issue #21).
    expect(page.locator("#queues tbody tr[data-queue='default'] td")).to_have_text(["default", "0", "1", "0"])

    # Live: a task submitted now shows up without a reload.
    fresh = submit_ok(base, {"task": "echo", "args": ["fresh"]})
    expect(task_row(page, "recent", fresh)).to_contain_text("succeeded", timeout=LIVE)
    page.screenshot(path=shots / "overview.png", full_page=True)

    # Filters: only failed tasks.
    page.select_option("#filter-state", "failed")
    expect(page.locator("#recent tbody tr")).to_have_count(1, timeout=LIVE)
    expect(task_row(page, "recent", failed)).to_have_count(1)


def test_a_task_submitted_from_the_cli_progresses_live_on_its_page(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker, shots: Path
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(offers=False, **env)  # the real worker below offers the tasks
    spawn_worker(**env)
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")} | {"RELAY_URL": base}
    argv = [RELAY_CLI, "submit", "sleep", "--arg", "seconds=6", "--arg", "steps=6"]
    submitted = subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=60, check=True)
    task_id = submitted.stdout.strip()

    page.goto(f"{base}/dashboard/#/tasks/{task_id}")
    expect(page.locator("#task-id")).to_have_text(task_id)
    # A progress event short of the end arrives while the task runs: the page is live, not a replay.
    page.wait_for_function(
        "() => window.relayDashboard.progress.some((p) => p.current > 0 && p.current < p.total)", timeout=LIVE
    )
    assert state(base, task_id)["state"] == "running"
    expect(page.locator("#task-state")).to_have_text("running")
    page.screenshot(path=shots / "task-running.png", full_page=True)

    expect(page.locator("#task-state")).to_have_text("succeeded", timeout=LIVE)
    expect(page.locator("#task-progress-text")).to_have_text("6 / 6 (100 %)")
    expect(page.locator("#task-result")).to_contain_text('"slept": 6')
    expect(page.locator("#task-events tbody tr").last).to_have_attribute("data-type", "end")
    assert page.eval_on_selector("#task-progress", "(bar) => [bar.value, bar.max]") == [6, 6]
    currents = [p["current"] for p in seen(page)["progress"]]
    assert currents == sorted(currents)
    assert len(currents) >= 2  # it moved in steps on the page, not straight to the end
    page.screenshot(path=shots / "task-succeeded.png", full_page=True)


def test_a_task_submitted_from_the_page_is_cancelled_from_it(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker, shots: Path
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(offers=False, **env)  # the real worker below offers the tasks
    spawn_worker(**env)
    page.goto(f"{base}/dashboard/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#submit-task option')].some((o) => o.value === 'sleep')"
    )
    page.select_option("#submit-task", "sleep")
    page.fill("#submit-kwargs", '{"seconds": 120, "steps": 120}')
    page.click("#submit-form button[type=submit]")

    page.wait_for_url("**/dashboard/#/tasks/*", timeout=LIVE)
    task_id = page.url.rsplit("/", 1)[1]
    page.wait_for_function("() => window.relayDashboard.progress.length > 0", timeout=LIVE)
    assert state(base, task_id)["state"] == "running"
    page.click("#task-cancel")
    expect(page.locator("#task-state")).to_have_text("aborted", timeout=LIVE)
    expect(page.locator("#task-result")).to_contain_text("Aborted")
    expect(page.locator("#task-cancel")).to_be_hidden()
    expect(page.locator("#task-retry")).to_be_visible()
    page.screenshot(path=shots / "cancelled.png", full_page=True)
    assert state(base, task_id)["state"] == "aborted"
    types = [e["type"] for e in seen(page)["task"]["events"]]
    assert types[0] == "started"
    assert types[-2:] == ["aborted", "end"]


def test_the_submit_form_starts_from_the_tasks_schema_and_shows_it(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker, shots: Path
) -> None:
    # Every task started at {}: a newcomer had to guess its arguments' names, types and limits.
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(offers=False, **env)  # the real worker below offers the tasks
    spawn_worker(**env)
    page.goto(f"{base}/dashboard/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#submit-task option')].some((o) => o.value === 'sync_add')"
    )

    def arguments() -> Any:
        return json.loads(page.locator("#submit-kwargs").input_value())

    # The default task, echo: its default, and what it is.
    expect(page.locator("#submit-description")).to_have_text("Return the message at once.", timeout=LIVE)
    assert arguments() == {"message": "hello"}
    rows = page.locator("#submit-params tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td")).to_have_text(["message", "string", '"hello"', ""])

    # Defaults and limits beside them.
    page.select_option("#submit-task", "sleep")
    assert arguments() == {"seconds": 2, "steps": 4}
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td")).to_have_text(["seconds", "number", "2", "≥ 0, ≤ 3600"])
    expect(rows.nth(1).locator("td")).to_have_text(["steps", "integer", "4", "≥ 1, ≤ 1000"])

    # Required arguments start as a value of their type, and say they are required.
    page.select_option("#submit-task", "sync_add")
    assert arguments() == {"a": 0, "b": 0}
    expect(rows.nth(0).locator("td")).to_have_text(["a", "integer", "required", ""])
    page.locator("#submit-schema summary").click()
    expect(page.locator("#submit-json-schema")).to_contain_text('"required": [')
    page.screenshot(path=shots / "submit-form.png", full_page=True)

    # A task with no arguments says so; the prefilled form submits as it stands.
    page.select_option("#submit-task", "always_flaky")
    assert arguments() == {}
    expect(page.locator("#submit-no-params")).to_be_visible()
    page.select_option("#submit-task", "sync_add")
    page.fill("#submit-kwargs", '{"a": 2, "b": 3}')
    page.click("#submit-form button[type=submit]")
    page.wait_for_url("**/dashboard/#/tasks/*", timeout=LIVE)
    expect(page.locator("#task-result")).to_have_text("5", timeout=LIVE)


def test_a_failed_task_is_retried_from_the_failed_list_and_runs_again(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker, shots: Path
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(offers=False, **env)  # the real worker below offers the tasks
    spawn_worker(**env)
    # Fails on its first try (no automatic retries allowed), succeeds on any later one.
    task_id = submit_ok(base, {"task": "flaky", "kwargs": {"failures": 1}, "max_retries": 0})
    assert wait_state(base, task_id, {"failed"})["tries"] == 1

    page.goto(f"{base}/dashboard/")
    retry = task_row(page, "failed", task_id).locator("button[data-action=retry]")
    expect(retry).to_be_visible(timeout=LIVE)
    page.screenshot(path=shots / "failed-list.png", full_page=True)
    retry.click()

    page.wait_for_url(f"**/dashboard/#/tasks/{task_id}", timeout=LIVE)
    expect(page.locator("#task-state")).to_have_text("succeeded", timeout=LIVE)
    expect(page.locator("#task-tries")).to_have_text("2")
    expect(page.locator("#task-result")).to_contain_text('"succeeded_on_try": 2')
    page.screenshot(path=shots / "retried.png", full_page=True)
    # Its log, as the page received it: the failed run, then queued again, running again, and its end.
    types = [e["type"] for e in seen(page)["task"]["events"]]
    assert types == ["started", "error", "end", "requeued", "started", "result", "end"]
    assert state(base, task_id)["state"] == "succeeded"


def test_with_api_keys_the_page_asks_once_and_every_data_call_carries_the_key(
    browser: Browser, spawn_api: StartApi, spawn_worker: StartWorker, shots: Path
) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), "RELAY_API_KEYS": f"dashboard:{API_KEY}"}
    _, base = spawn_api(offers=False, **env)  # the real worker below offers the tasks
    spawn_worker(**env)
    # The page and its files need no key; the data does.
    for path in ("/dashboard/", "/dashboard/dashboard.js", "/dashboard/dashboard.css"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 200, path
    assert httpx.get(f"{base}/stats", timeout=10).status_code == 401
    body = {"task": "sleep", "kwargs": {"seconds": 60, "steps": 60}}
    headers = {"X-API-Key": API_KEY}
    task_id = httpx.post(f"{base}/tasks", json=body, headers=headers, timeout=10).json()["id"]

    context = browser.new_context()
    page = context.new_page()
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    try:
        page.goto(f"{base}/dashboard/")
        expect(page.locator("#key-dialog")).to_be_visible(timeout=LIVE)
        page.fill("#key-input", "not-the-key")
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-error")).to_contain_text("refused", timeout=LIVE)
        page.fill("#key-input", API_KEY)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-dialog")).to_be_hidden()
        expect(page.locator("#workers tbody tr")).to_have_count(1, timeout=LIVE)
        page.screenshot(path=shots / "with-key.png", full_page=True)

        # Another view, and a reload: no more questions; the events stream with the key (fetch, not EventSource).
        page.goto(f"{base}/dashboard/#/tasks/{task_id}")
        page.reload()
        page.wait_for_function("() => window.relayDashboard.progress.length > 0", timeout=LIVE)
        expect(page.locator("#key-dialog")).to_be_hidden()
        assert page.evaluate("() => sessionStorage.getItem('relay.apiKey')") == API_KEY
        assert page.evaluate("() => localStorage.length") == 0
    finally:
        context.close()
        httpx.delete(f"{base}/tasks/{task_id}", headers=headers, timeout=10)

    assert not [r.url for r in requests if API_KEY in r.url]  # never in a URL
    data = [r for r in requests if "/dashboard" not in r.url]
    assert {r.url.split("?")[0].removeprefix(base) for r in data} >= {"/stats", "/tasks", f"/tasks/{task_id}/events"}
    with_key = [r for r in data if r.headers.get("x-api-key") == API_KEY]
    refused = [r for r in data if r.headers.get("x-api-key") in (None, "not-the-key")]
    assert len(with_key) + len(refused) == len(data)
    # Only the calls before the right key was given went without it: every one after carried it.
    assert data.index(with_key[0]) == len(refused)


def test_task_values_are_shown_as_text_never_run_as_html_and_the_trace_is_named(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(offers=False, **env)  # the real worker below offers the tasks
    spawn_worker(**env)
    hostile = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>"
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    body = {"task": "echo", "args": [hostile]}
    task_id = httpx.post(f"{base}/tasks", json=body, headers={"traceparent": traceparent}, timeout=10).json()["id"]
    wait_state(base, task_id, {"succeeded"})
    response = page.goto(f"{base}/dashboard/#/tasks/{task_id}")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    expect(page.locator("#task-result")).to_contain_text(hostile, timeout=LIVE)
    expect(page.locator("#task-trace")).to_have_text("4bf92f3577b34da6a3ce929d0e0e4736")  # the run's trace
    expect(page.locator("#task-arguments")).to_contain_text("onerror")
    page.goto(f"{base}/dashboard/")
    expect(task_row(page, "recent", task_id)).to_have_count(1, timeout=LIVE)
    assert page.locator("#view img, #view script").count() == 0
    assert page.evaluate("() => window.__pwned") is None


def test_the_page_is_open_but_paths_under_it_reach_no_data_without_a_key(spawn_api: StartApi) -> None:
    _, base = spawn_api(offers=False, RELAY_QUEUE_NAME=queue(), RELAY_API_KEYS=f"dashboard:{API_KEY}")
    host, port = base.removeprefix("http://").split(":")

    def raw_get(path: str) -> tuple[int, bytes]:
        with socket.create_connection((host, int(port)), timeout=10) as sock:  # sent as is: nothing normalises it
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".encode())
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        return int(answer.split(b" ", 2)[1]), answer

    status, page = raw_get("/dashboard/")
    assert status == 200
    assert b"<!doctype html>" in page
    crafted = ["/dashboard/../stats", "/dashboard/..%2Fstats", "/dashboard/%2e%2e/stats", "/dashboard//stats"]
    for path in [*crafted, "/dashboard/x/../../tasks", "/dashboard/stats"]:
        status, answer = raw_get(path)
        assert status in (401, 404), (path, answer[:200])
        assert b'"queue"' not in answer
        assert b'"tasks"' not in answer


def test_a_task_no_live_worker_runs_says_why_it_waits_on_its_page(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker, redis_client: Any, shots: Path
) -> None:
    from tests.e2e.test_lifecycle import put_job

    name = queue()
    _, base = spawn_api(offers=False, RELAY_QUEUE_NAME=name)
    spawn_worker(RELAY_QUEUE_NAME=name, RELAY_TASK_MODULES="worker.tasks.demo")  # no 'resize' here
    task_id = f"waits-{uuid.uuid4().hex[:8]}"
    put_job(redis_client, name, task_id, "resize")  # what another deployment's submit leaves in the queue
    page.goto(f"{base}/dashboard/#/tasks/{task_id}")
    expect(page.locator("#task-state")).to_have_text("queued", timeout=LIVE)
    expect(page.locator("#task-times")).to_contain_text("waiting for a worker that runs 'resize'", timeout=LIVE)
    page.screenshot(path=shots / "task-waiting.png", full_page=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")} | {"RELAY_URL": base}
    shown = subprocess.run([RELAY_CLI, "status", task_id], env=env, capture_output=True, text=True, timeout=60)
    assert "waiting for a worker that runs 'resize'" in shown.stdout, shown.stdout + shown.stderr


def test_a_workflow_is_drawn_as_its_tree_and_its_steps_move_live(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker, shots: Path, tmp_path: Path
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(offers=False, **env)
    spawn_worker(**env)
    marker = tmp_path / "pass"
    slow = {"task": "chatty", "args": [1], "kwargs": {"events": 10, "interval": 0.2}}
    members = [{"task": "inc", "args": [i], "immutable": True} for i in range(3)]
    workflow = {
        "chain": [
            slow,
            {"chord": members, "callback": {"task": "tsum"}},
            {"task": "fails_until", "kwargs": {"marker": str(marker)}},
        ]
    }
    flow = httpx.post(f"{base}/workflows", json={"workflow": workflow}, timeout=10).json()["id"]
    page.goto(f"{base}/dashboard/#/")
    expect(page.locator(f"#workflows tbody tr[data-workflow-id='{flow}']")).to_be_visible(timeout=LIVE)
    page.locator(f"#workflows tbody tr[data-workflow-id='{flow}'] a").click()
    step = page.locator("#workflow-tree .wf-step")
    expect(step).to_have_count(6, timeout=LIVE)  # chatty, three members, the callback, the last step
    expect(step.nth(0)).to_have_attribute("data-state", "running", timeout=LIVE)  # moved by the stream
    page.screenshot(path=str(shots / "running.png"), full_page=True)
    expect(page.locator("#workflow-state")).to_have_text("failed", timeout=LIVE)
    states = [step.nth(i).get_attribute("data-state") for i in range(6)]
    assert states == ["succeeded"] * 5 + ["failed"]
    expect(page.locator("#workflow-result")).to_contain_text("step 5: NotRetried", timeout=LIVE)
    marker.write_text("ok")
    page.locator("#workflow-retry").click()
    expect(page.locator("#workflow-state")).to_have_text("succeeded", timeout=LIVE)
    expect(step.nth(5)).to_have_attribute("data-state", "succeeded", timeout=LIVE)
    expect(page.locator("#workflow-result")).to_have_text("6", timeout=LIVE)  # 1+1, 1+2, 1+3... tsum([1,2,3])
    page.screenshot(path=str(shots / "succeeded.png"), full_page=True)
    events = seen(page)["workflow"]["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # once each, in order, across the retry
    assert events[-1]["type"] == "workflow_end"


def test_a_map_over_the_value_before_it_draws_its_members_once_it_expands(
    page: Page, spawn_api: StartApi, spawn_worker: StartWorker, shots: Path
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    _, base = spawn_api(offers=False, **env)
    spawn_worker(**env)
    slow = {"task": "chatty", "args": [[1, 2, 3]], "kwargs": {"events": 10, "interval": 0.2}}  # then passes it on
    workflow = {"chain": [slow, {"map": "inc", "kwargs": {"seconds": 0.5}}, {"task": "tsum"}]}
    flow = httpx.post(f"{base}/workflows", json={"workflow": workflow}, timeout=10).json()["id"]
    page.goto(f"{base}/dashboard/#/workflows/{flow}")
    step = page.locator("#workflow-tree .wf-step")
    mapped = page.locator("#workflow-tree .wf-group[data-step='1']")
    expect(step).to_have_count(2, timeout=LIVE)  # chatty and tsum; the map has no members yet
    expect(mapped).to_have_attribute("data-state", "pending", timeout=LIVE)
    expect(step).to_have_count(5, timeout=LIVE)  # it expanded: its three members drawn (steps 3, 4 and 5)
    expect(mapped.locator(".wf-step")).to_have_count(3)
    page.screenshot(path=str(shots / "map-expanded.png"), full_page=True)
    expect(page.locator("#workflow-state")).to_have_text("succeeded", timeout=LIVE)
    expect(mapped).to_have_attribute("data-state", "succeeded", timeout=LIVE)
    assert [step.nth(i).get_attribute("data-step") for i in range(5)] == ["0", "3", "4", "5", "2"]
    expect(page.locator("#workflow-result")).to_have_text("9", timeout=LIVE)  # tsum([2, 3, 4])
