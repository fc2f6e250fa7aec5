"""A web page holding tenant web's key (the README's CORS recipe) cannot read tenant ci's task: headless
Chromium on an allowed origin calls the API with fetch, as any script on that page could."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from bench.harness.client import submit
from tests.conftest import StartApi
from tests.e2e.test_cors_browser import start_site
from tests.support.chromium import chromium

WEB, CI = "browser-web-key-0001", "browser-ci-key-0002"
FETCH = """async ([url, key, accept]) => {
  const response = await fetch(url, {headers: {"X-API-Key": key, "Accept": accept}});
  return {status: response.status, body: await response.text()};
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fetch(page: Page, url: str, key: str, accept: str = "application/json") -> dict[str, Any]:
    answer: dict[str, Any] = page.evaluate(FETCH, [url, key, accept])
    return answer


def test_a_page_with_tenant_webs_key_cannot_read_tenant_cis_task(
    browser: Browser, spawn_api: StartApi, log_dir: Path, tmp_path: Path
) -> None:
    site_proc, site = start_site(log_dir)
    queue = unique("q")
    _, api = spawn_api(RELAY_QUEUE_NAME=queue, RELAY_CORS_ORIGINS=site.origin, RELAY_API_KEYS=f"web:{WEB},ci:{CI}")
    secret = unique("ci-secret")
    ci_task = unique("ci-task")
    body = {"task": "echo", "id": ci_task, "kwargs": {"message": secret}, "delay_seconds": 600}
    assert submit(api, body, headers={"X-API-Key": CI}).status_code == 202
    web_task = unique("web-task")
    assert submit(api, {"task": "echo", "id": web_task}, headers={"X-API-Key": WEB}).status_code == 202
    page = browser.new_page()
    try:
        page.goto(site.page_url)
        # The page reaches the API (CORS allows its origin) and reads web's own task...
        own = fetch(page, f"{api}/tasks/{web_task}", WEB)
        assert own["status"] == 200, own
        assert json.loads(own["body"])["id"] == web_task
        # ...but ci's task is, for it, a task that does not exist, over every read a script could try.
        never_used = unique("ci-task")
        for path, accept in (
            ("", "application/json"),
            ("/events", "application/x-ndjson"),
            ("/events", "text/event-stream"),
        ):
            foreign = fetch(page, f"{api}/tasks/{ci_task}{path}", WEB, accept)
            unknown = fetch(page, f"{api}/tasks/{never_used}{path}", WEB, accept)
            assert foreign["status"] == unknown["status"] == 404, (path, foreign)
            assert json.loads(foreign["body"])["error"]["code"] == "task_not_found"
            assert foreign["body"].replace(ci_task, never_used) == unknown["body"]
            assert secret not in foreign["body"]
        for query in ("", "?limit=500", "?tenant=ci"):
            listed = fetch(page, f"{api}/tasks{query}", WEB)
            assert secret not in listed["body"]
            assert ci_task not in listed["body"]
            assert listed["status"] == (403 if "tenant" in query else 200), listed
        page.screenshot(path=tmp_path / "tenant-page.png", full_page=True)
    finally:
        page.close()
        site_proc.stop()
