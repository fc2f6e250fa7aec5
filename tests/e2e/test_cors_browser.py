"""A real browser on another origin uses Relay: headless Chromium (Debian's, driven by Playwright) loads a
page from a static server on one loopback port and talks to the API on another, following a task's
events live with EventSource (no key) and with fetch streaming (X-API-Key). An origin that is not
listed is refused by the browser itself. Screenshots are kept in each test's tmp_path."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, Page

from bench.harness.client import state, submit_ok
from bench.harness.processes import ManagedProcess, free_port, wait_until
from shared import keys, lanes
from tests.conftest import StartApi, StartWorker
from tests.support.chromium import chromium

PAGE_DIR = Path(__file__).resolve().parents[1] / "support" / "browser"
LONG_TASK = {"task": "sleep", "kwargs": {"seconds": 120, "steps": 120}}  # one progress event a second
BROWSER_KEY = "browser-key-0001"


@dataclass(frozen=True)
class Site:
    """A static web server serving the test page; its origin is what the API must allow (or not)."""

    origin: str

    @property
    def page_url(self) -> str:
        return f"{self.origin}/index.html"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def start_site(log_dir: Path) -> tuple[ManagedProcess, Site]:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(PAGE_DIR)]
    proc = ManagedProcess("site", argv, {"PATH": "/usr/bin:/bin"}, log_dir)
    site = Site(f"http://127.0.0.1:{port}")

    def serving() -> bool:
        try:
            return httpx.get(site.page_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(serving, 10, "the static site to serve")
    return proc, site


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    """Two origins serving the same page: the first is the one the API allows."""
    log_dir = tmp_path_factory.mktemp("sites")
    started = [start_site(log_dir), start_site(log_dir)]
    try:
        yield started[0][1], started[1][1]
    finally:
        for proc, _ in started:
            proc.stop()


class Console:
    """What the page printed to its console (Chromium reports CORS refusals there)."""

    def __init__(self, page: Page) -> None:
        self.lines: list[str] = []
        page.on("console", self._add)

    def _add(self, message: ConsoleMessage) -> None:
        self.lines.append(message.text)


def relay_state(page: Page) -> dict[str, Any]:
    value: dict[str, Any] = page.evaluate("window.relay")
    return value


def wait_for_progress_then_abort(page: Page, api: str, headers: dict[str, str]) -> str:
    """Once the page has a progress event, the task must still be running (the events are live); abort it."""
    page.wait_for_function("window.relay.events.some(e => e.type === 'progress')", timeout=30_000)
    task_id: str = relay_state(page)["taskId"]
    assert httpx.get(f"{api}/tasks/{task_id}", headers=headers, timeout=10).json()["state"] == "running"
    assert httpx.delete(f"{api}/tasks/{task_id}", headers=headers, timeout=10).status_code == 202
    page.wait_for_function("document.getElementById('status').textContent === 'ended'", timeout=30_000)
    return task_id


def assert_complete_run(events: list[dict[str, Any]], task_id: str) -> None:
    types = [e["type"] for e in events]
    assert types[0] == "started", types
    assert "progress" in types, types
    assert types[-2:] == ["aborted", "end"], types
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # nothing missed, nothing repeated
    assert {e["task_id"] for e in events} == {task_id}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_event_source_follows_a_task_live_from_another_origin(
    browser: Browser, sites: tuple[Site, Site], spawn_api: StartApi, spawn_worker: StartWorker, tmp_path: Path
) -> None:
    allowed, _ = sites
    queue = unique("q")
    spawn_worker(RELAY_QUEUE_NAME=queue)
    _, api = spawn_api(RELAY_QUEUE_NAME=queue, RELAY_CORS_ORIGINS=allowed.origin)
    page = browser.new_page()
    try:
        page.goto(allowed.page_url)
        page.evaluate("([api, body]) => { submitThenFollow(api, body); }", [api, LONG_TASK])
        task_id = wait_for_progress_then_abort(page, api, {})
        page.screenshot(path=tmp_path / "eventsource.png", full_page=True)
        result = relay_state(page)
        assert (result["httpStatus"], result["location"]) == (202, f"/tasks/{task_id}")  # an exposed header
        assert_complete_run(result["events"], task_id)
    finally:
        page.close()


def test_fetch_stream_with_an_api_key_from_another_origin(
    browser: Browser, sites: tuple[Site, Site], spawn_api: StartApi, spawn_worker: StartWorker, tmp_path: Path
) -> None:
    allowed, _ = sites
    queue = unique("q")
    spawn_worker(RELAY_QUEUE_NAME=queue)
    _, api = spawn_api(RELAY_QUEUE_NAME=queue, RELAY_CORS_ORIGINS=allowed.origin, RELAY_API_KEYS=f"web:{BROWSER_KEY}")
    page = browser.new_page()
    try:
        page.goto(allowed.page_url)
        # A wrong key: the page can read the 401 and its error code (the error carries CORS headers too).
        page.evaluate("([api, body]) => submitAndStream(api, 'wrong-key', body)", [api, LONG_TASK])
        assert (relay_state(page)["httpStatus"], relay_state(page)["errorCode"]) == (401, "unauthorized")

        page.evaluate("([api, key, body]) => { submitAndStream(api, key, body); }", [api, BROWSER_KEY, LONG_TASK])
        task_id = wait_for_progress_then_abort(page, api, {"X-API-Key": BROWSER_KEY})
        page.screenshot(path=tmp_path / "fetch-stream.png", full_page=True)
        result = relay_state(page)
        assert (result["httpStatus"], result["location"]) == (200, f"/tasks/{task_id}")
        assert result["taskId"] == task_id  # X-Relay-Task-Id, readable because it is exposed
        assert_complete_run(result["events"], task_id)
    finally:
        page.close()


def test_an_origin_not_listed_is_blocked_by_the_browser(
    browser: Browser, sites: tuple[Site, Site], spawn_api: StartApi, redis_url: str, tmp_path: Path
) -> None:
    allowed, other = sites
    queue = unique("q")
    _, api = spawn_api(RELAY_QUEUE_NAME=queue, RELAY_CORS_ORIGINS=allowed.origin)
    existing = submit_ok(api, {"task": "echo", "delay_seconds": 600})
    page = browser.new_page()
    console = Console(page)
    try:
        page.goto(other.page_url)
        page.evaluate("([api, body]) => submitThenFollow(api, body)", [api, {"task": "echo"}])
        assert relay_state(page)["errors"] == ["TypeError: Failed to fetch"]
        page.evaluate("([api, id]) => follow(api, id)", [api, existing])
        page.wait_for_function("document.getElementById('status').textContent === 'EventSource closed'")
        page.screenshot(path=tmp_path / "blocked.png", full_page=True)
        assert relay_state(page)["events"] == []
        assert any("blocked by CORS policy" in line for line in console.lines), console.lines
    finally:
        page.close()
    # The preflight failed, so the POST itself was never sent: nothing was enqueued.
    client = redis.Redis.from_url(redis_url)
    lane = keys.lane(queue, lanes.lane_id("echo", "default", 0, None))  # its lane (shared/keys.py)
    assert client.zrange(lane, 0, -1) == [existing.encode()]
    client.close()
    assert state(api, existing)["state"] == "deferred"
