"""Named queues and priorities (issue #21) on the dashboard, in real headless Chromium against a stubbed API:
Playwright answers the page's own files from api/dashboard/ and the data as issue #21's contract shapes it
(``queues`` in ``GET /stats``, ``queue`` and ``priority`` on each task), or as an API without named queues
does (none of them), which must look as before. The real-API tests are in test_dashboard_browser.py.
Screenshots are kept in build/screenshots/<test>/ (git-ignored)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from bench.harness.processes import REPO
from tests.support.chromium import chromium

ORIGIN = "http://relay.test"  # never resolved: every request is answered by the route below
DASHBOARD = REPO / "api" / "dashboard"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
LIVE = 30_000  # ms: long enough for a loaded machine, never a measure of speed
WAITING = "concurrency limit full: 3 running for customer_id=42"


def task(task_id: str, state: str, **extra: Any) -> dict[str, Any]:
    times = {"enqueued_at": "2030-01-02T03:04:05+00:00", "started_at": None, "finished_at": None}
    return {"id": task_id, "task": "resize", "state": state, "tries": 0, "arguments": {}} | times | extra


TASKS = [
    task("gpu-task-1", "queued", queue="gpu", priority=5, waiting_reason=WAITING),
    task("default-task-1", "running", queue="default", priority=0, waiting_reason=None),
]
WORKER = {
    "id": "gpu-host-1:4242",
    "hostname": "gpu-host-1",
    "pid": 4242,
    "status": "alive",
    "running": 1,
    "concurrency": 1,
    "totals": {},
    "started_at": "2030-01-02T03:00:00+00:00",
    "seen_seconds_ago": 1,
    "metrics_port": 9191,
    "queues": ["gpu", "default"],
}
STATS = {
    "queue": {"name": "relay:queue", "due": 3, "deferred": 1, "running": 2},
    "workers": [WORKER],
    "queues": [
        {"name": "default", "due": 0, "deferred": 1, "running": 1},
        {"name": "gpu", "due": 3, "deferred": 0, "running": 1},
    ],
}


def older(body: dict[str, Any], *added: str) -> dict[str, Any]:
    """What an API without named queues sends: the same, less the fields issue #21 adds."""
    return {k: v for k, v in body.items() if k not in added}


class StubApi:
    """Answers the dashboard's requests: its files from the checkout, its data from the given bodies."""

    def __init__(self, stats: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
        self.stats = stats
        self.tasks = {t["id"]: t for t in tasks}

    def __call__(self, route: Route) -> None:
        path = urlsplit(route.request.url).path
        file = DASHBOARD / (path.removeprefix("/dashboard/") or "index.html")
        if path.startswith("/dashboard/") and file.parent == DASHBOARD and file.suffix in TYPES:
            route.fulfill(status=200, body=file.read_bytes(), content_type=TYPES[file.suffix])
        elif path == "/stats":
            self.json(route, self.stats)
        elif path == "/tasks":
            failed = "state=failed" in route.request.url
            self.json(route, {"tasks": [] if failed else list(self.tasks.values()), "next_cursor": None})
        elif path == "/openapi.json":
            self.json(route, {"components": {"schemas": {"TaskSubmission": {"properties": {"task": {"enum": []}}}}}})
        elif path.endswith("/events"):
            route.fulfill(status=204)  # no stream: the page shows what GET /tasks/{id} says
        elif path.removeprefix("/tasks/") in self.tasks:
            self.json(route, self.tasks[path.removeprefix("/tasks/")])
        else:
            self.json(route, {"error": {"code": "route_not_found", "message": path, "details": None}}, 404)

    @staticmethod
    def json(route: Route, body: Any, status: int = 200) -> None:
        route.fulfill(status=status, body=json.dumps(body), content_type="application/json")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def open_page(browser: Browser, api: StubApi) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.route(f"{ORIGIN}/**", api)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from open_page(browser, StubApi(STATS, TASKS))


@pytest.fixture
def older_page(browser: Browser) -> Iterator[Page]:
    stats = older(STATS, "queues") | {"workers": [older(WORKER, "queues")]}
    yield from open_page(browser, StubApi(stats, [older(t, "queue", "priority") for t in TASKS]))


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    folder = REPO / "build" / "screenshots" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_overview_shows_each_named_queue_and_each_tasks_queue_and_priority(page: Page, shots: Path) -> None:
    page.goto(f"{ORIGIN}/dashboard/")
    expect(page.locator("#queues-section")).to_be_visible(timeout=LIVE)
    expect(page.locator("#queues tbody tr")).to_have_count(2)
    expect(page.locator("#queues tbody tr[data-queue='gpu'] td")).to_have_text(["gpu", "3", "0", "1"])
    expect(page.locator("#queues tbody tr[data-queue='default'] td")).to_have_text(["default", "0", "1", "1"])
    expect(page.locator("#queue-due")).to_have_text("3")  # the queue's own gauges stay as they were
    expect(page.locator("#workers tbody tr td.queue-column")).to_have_text(["gpu, default"])  # served, in order

    expect(page.locator("#recent thead th.queue-column")).to_have_count(2)
    for header in page.locator("#recent thead th.queue-column").all():
        expect(header).to_be_visible()
    gpu = page.locator("#recent tbody tr[data-task-id='gpu-task-1'] td.queue-column")
    expect(gpu).to_have_text(["gpu", "5"])
    default = page.locator("#recent tbody tr[data-task-id='default-task-1'] td.queue-column")
    expect(default).to_have_text(["default", "0"])  # the lowest priority is shown, not left blank
    page.screenshot(path=shots / "overview-queues.png", full_page=True)


def test_the_task_page_shows_its_queue_priority_and_why_it_waits(page: Page, shots: Path) -> None:
    page.goto(f"{ORIGIN}/dashboard/#/tasks/gpu-task-1")
    expect(page.locator("#task-state")).to_have_text("queued", timeout=LIVE)
    expect(page.locator("#task-queue")).to_have_text("gpu")
    expect(page.locator("#task-queue-line")).to_be_visible()
    expect(page.locator("#task-priority")).to_have_text("5")
    expect(page.locator("#task-times")).to_contain_text(WAITING)
    page.screenshot(path=shots / "task-queue.png", full_page=True)


def test_without_named_queues_the_pages_look_as_before(older_page: Page) -> None:
    older_page.goto(f"{ORIGIN}/dashboard/")
    expect(older_page.locator("#recent tbody tr")).to_have_count(2, timeout=LIVE)
    expect(older_page.locator("#queue-due")).to_have_text("3")
    expect(older_page.locator("#queues-section")).to_be_hidden()
    expect(older_page.locator("#workers tbody tr")).to_have_count(1)
    expect(older_page.locator("#workers tbody tr td.queue-column")).to_be_hidden()
    for header in older_page.locator("#recent thead th.queue-column").all():
        expect(header).to_be_hidden()
    expect(older_page.locator("#recent tbody tr").first.locator("td.queue-column").first).to_be_hidden()

    older_page.goto(f"{ORIGIN}/dashboard/#/tasks/gpu-task-1")
    expect(older_page.locator("#task-state")).to_have_text("queued", timeout=LIVE)
    expect(older_page.locator("#task-queue-line")).to_be_hidden()
    expect(older_page.locator("#task-priority-line")).to_be_hidden()
    errors = older_page.evaluate("() => window.relayDashboard.errors")
    assert errors == [], errors
