"""CORS headers as a browser sees them, checked over plain HTTP against real API processes (the browser
itself is driven in test_cors_browser.py)."""

from __future__ import annotations

import httpx

from bench.harness.client import submit
from tests.conftest import StartApi

PAGE = "http://127.0.0.1:9001"


def preflight(base: str, path: str, origin: str, method: str, headers: str = "") -> httpx.Response:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    return httpx.options(f"{base}{path}", headers=request_headers, timeout=10)


def test_listed_origin_gets_preflights_without_a_key_and_credentials(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_CORS_ORIGINS=f"{PAGE}, https://other.example", RELAY_API_KEYS="web:web-key-0001")
    answer = preflight(base, "/tasks", PAGE, "POST", "x-api-key,content-type")
    assert answer.status_code == 204  # no key needed: browsers never send one with a preflight
    assert answer.headers["access-control-allow-origin"] == PAGE
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert set(answer.headers["access-control-allow-headers"].split(",")) == {"x-api-key", "content-type"}
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert answer.headers["vary"] == "origin"
    events = preflight(base, "/tasks/some-task/events", PAGE, "GET", "x-api-key,last-event-id")
    assert events.headers["access-control-allow-origin"] == PAGE

    posted = submit(base, {"task": "echo", "delay_seconds": 600}, headers={"Origin": PAGE, "X-API-Key": "web-key-0001"})
    assert posted.status_code == 202
    exposed = set(posted.headers["access-control-expose-headers"].split(","))
    assert {"location", "x-relay-task-id", "retry-after"} <= exposed
    refused = submit(base, {"task": "echo"}, headers={"Origin": PAGE})
    assert refused.status_code == 401  # errors carry the headers too, so a page can read why
    assert refused.headers["access-control-allow-origin"] == PAGE


def test_origins_not_listed_get_no_cors_headers(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_CORS_ORIGINS=PAGE)
    for answer in (
        preflight(base, "/tasks", "http://127.0.0.1:9002", "POST", "content-type"),
        preflight(base, "/tasks", "https://127.0.0.1:9001", "POST", "content-type"),
        httpx.get(f"{base}/", headers={"Origin": "http://evil.example"}, timeout=10),
        httpx.get(f"{base}/", timeout=10),  # no Origin (curl, servers): nothing to add
    ):
        assert not [h for h in answer.headers if h.startswith("access-control-")], answer.headers


def test_any_origin_means_no_credentials(spawn_api: StartApi) -> None:
    _, base = spawn_api(RELAY_CORS_ORIGINS="*")
    answer = preflight(base, "/tasks", "http://anywhere.example", "POST", "content-type")
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer.headers


def test_no_origins_configured_means_no_cross_origin_access(relay: str) -> None:
    answer = preflight(relay, "/tasks", PAGE, "POST", "content-type")
    assert answer.status_code == 405  # no preflight route at all: the browser refuses the request
    assert "access-control-allow-origin" not in answer.headers
