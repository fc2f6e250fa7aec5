"""Keys are tenants: two tenants, a read-only key and an admin against every route, on real processes.

A tenant sees and acts on its own tasks only, and another tenant's id answers exactly as an id nobody used:
each foreign answer is compared with the answer to the same request made before the task existed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.harness.client import ndjson_lines, sse_messages
from bench.harness.processes import BIN, start_api, start_worker, wait_until
from relay.client import Client, ForbiddenError, TaskNotFound
from shared import keys
from tests.support.environment import relay_env

WEB, WEB_READ, CI, OPS = "key-web-0001", "key-web-read-0002", "key-ci-0003", "key-ops-0004"
KEYS = f"web:{WEB},web:{WEB_READ}:read,ci:{CI},ops:{OPS}:admin"


class Stack:
    """An API with four keys and a worker, on a queue of their own."""

    def __init__(self, base: str, queue: str, redis_url: str, log_dir: Path) -> None:
        self.base, self.queue, self.redis_url, self.log_dir = base, queue, redis_url, log_dir

    def call(self, key: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {}) | ({"X-API-Key": key} if key else {})
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=10, **kwargs)

    def submit(self, key: str, body: dict[str, Any]) -> httpx.Response:
        return self.call(key, "POST", "/tasks", json=body)

    def ids(self, key: str, **params: Any) -> list[str]:
        """Every id ``GET /tasks`` shows ``key``, following cursors."""
        found: list[str] = []
        cursor: str | None = None
        while True:
            page = self.call(key, "GET", "/tasks", params=params | ({"cursor": cursor} if cursor else {}))
            assert page.status_code == 200, page.text
            found += [t["id"] for t in page.json()["tasks"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return found


@pytest.fixture(scope="module")
def stack(redis_url: str, log_dir: Path) -> Iterator[Stack]:
    queue = f"relay:tenants:{uuid.uuid4().hex[:8]}"
    env = relay_env(redis_url, RELAY_QUEUE_NAME=queue, RELAY_API_KEYS=KEYS, RELAY_HEARTBEAT_SECONDS="1")
    worker = start_worker(log_dir, env)
    api, base = start_api(log_dir, env)
    try:
        yield Stack(base, queue, redis_url, log_dir)
    finally:
        api.stop()
        worker.stop()
    assert "Traceback" not in api.output()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def stream(stack: Stack, key: str, task_id: str, accept: str) -> tuple[int, dict[str, str], bytes]:
    """An events request, read to its end (a foreign or unknown id ends at once with a 404)."""
    with httpx.stream(
        "GET", f"{stack.base}/tasks/{task_id}/events", headers={"X-API-Key": key, "Accept": accept}, timeout=30
    ) as response:
        return response.status_code, dict(response.headers), response.read()


def answer(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    return response.status_code, dict(response.headers), response.content


def probes(stack: Stack, key: str, task_id: str) -> dict[str, tuple[int, dict[str, str], bytes]]:
    """Every route that names a task, as ``key`` sees ``task_id``: status, headers and body."""
    return {
        "GET": answer(stack.call(key, "GET", f"/tasks/{task_id}")),
        "events ndjson": stream(stack, key, task_id, "application/x-ndjson"),
        "events sse": stream(stack, key, task_id, "text/event-stream"),
        "DELETE": answer(stack.call(key, "DELETE", f"/tasks/{task_id}")),
        "retry": answer(stack.call(key, "POST", f"/tasks/{task_id}/retry")),
    }


def without_date(answers: dict[str, tuple[int, dict[str, str], bytes]]) -> dict[str, Any]:
    return {route: (s, {k: v for k, v in h.items() if k != "date"}, b) for route, (s, h, b) in answers.items()}


def test_a_foreign_id_answers_exactly_like_an_unknown_one(stack: Stack) -> None:
    task_id = unique("probe")
    # ci's answers for an id nobody used (a submit by ci would make it ci's own: test_same_client_id_... does).
    unknown = probes(stack, CI, task_id)
    for route, (status, _, body) in unknown.items():
        assert status == 404, route
        assert json.loads(body)["error"]["code"] == "task_not_found"

    # web now owns the id: a waiting task, then an ended one.
    secret = {"message": "web's secret"}
    created = stack.submit(WEB, {"task": "echo", "id": task_id, "kwargs": secret, "delay_seconds": 600})
    assert created.status_code == 202
    assert created.json()["id"] == task_id
    for _ in ("waiting", "ended"):
        foreign = probes(stack, CI, task_id)
        assert without_date(foreign) == without_date(unknown)
        for _, _, body in foreign.values():
            assert b"secret" not in body
        assert stack.call(WEB, "DELETE", f"/tasks/{task_id}").status_code in (200, 409)
    # web itself sees its task under the id it chose, in its state and its events.
    view = stack.call(WEB, "GET", f"/tasks/{task_id}").json()
    assert (view["id"], view["state"], view["arguments"], view["tenant"]) == (task_id, "aborted", secret, "web")
    with httpx.stream(
        "GET", f"{stack.base}/tasks/{task_id}/events", headers={"X-API-Key": WEB}, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-relay-task-id"] == task_id
        events = list(ndjson_lines(response))
    assert [e["type"] for e in events] == ["aborted", "end"]
    assert {e["task_id"] for e in events} == {task_id}


def test_same_client_id_from_two_tenants_is_two_tasks(stack: Stack) -> None:
    task_id = unique("shared")
    web = stack.submit(WEB, {"task": "echo", "id": task_id, "kwargs": {"message": "web"}, "delay_seconds": 600})
    ci = stack.submit(CI, {"task": "echo", "id": task_id, "kwargs": {"message": "ci"}, "delay_seconds": 600})
    assert (web.status_code, ci.status_code) == (202, 202)  # both created: neither learns of the other
    assert web.json()["id"] == ci.json()["id"] == task_id
    assert stack.call(WEB, "GET", f"/tasks/{task_id}").json()["arguments"] == {"message": "web"}
    assert stack.call(CI, "GET", f"/tasks/{task_id}").json()["arguments"] == {"message": "ci"}
    # The same submit again is idempotent within a tenant (200, the same task), never a conflict across them.
    again = stack.submit(CI, {"task": "echo", "id": task_id, "kwargs": {"message": "ci"}, "delay_seconds": 600})
    assert (again.status_code, again.json()["created"]) == (200, False)
    other = stack.submit(CI, {"task": "echo", "id": task_id, "kwargs": {"message": "web"}, "delay_seconds": 600})
    assert other.status_code == 409  # against ci's own task, named by the id ci chose
    assert other.json()["error"]["message"].startswith(f"id {task_id!r} is already taken")
    # Aborting one leaves the other waiting.
    assert stack.call(CI, "DELETE", f"/tasks/{task_id}").status_code == 200
    assert stack.call(WEB, "GET", f"/tasks/{task_id}").json()["state"] == "deferred"
    # The admin sees both, by their stored ids, with their tenants.
    for tenant in ("web", "ci"):
        view = stack.call(OPS, "GET", f"/tasks/{tenant}~{task_id}").json()
        assert (view["tenant"], view["arguments"]) == (tenant, {"message": tenant})
    stack.call(WEB, "DELETE", f"/tasks/{task_id}")


def test_roles_read_key_reads_admin_sees_every_tenant(stack: Stack) -> None:
    web_id = unique("roles")
    assert stack.submit(WEB, {"task": "echo", "id": web_id, "delay_seconds": 600}).status_code == 202
    # The read-only key of tenant web reads web's tasks and nothing else, and changes nothing.
    assert stack.call(WEB_READ, "GET", f"/tasks/{web_id}").status_code == 200
    assert web_id in stack.ids(WEB_READ)
    for method, path, body in (
        ("POST", "/tasks", {"task": "echo"}),
        ("DELETE", f"/tasks/{web_id}", None),
        ("POST", f"/tasks/{web_id}/retry", None),
        ("DELETE", f"/tasks/{unique('none')}", None),  # 403 whatever the id: a role check reveals no task
    ):
        refused = stack.call(WEB_READ, method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["error"]["code"] == "forbidden"
    # Tenants may not list another tenant; the admin may, with the same filter.
    assert stack.call(CI, "GET", "/tasks", params={"tenant": "web"}).status_code == 403
    assert web_id in stack.ids(WEB, tenant="web")
    assert f"web~{web_id}" in stack.ids(OPS, tenant="web")
    assert not [i for i in stack.ids(OPS, tenant="ci") if not i.startswith("ci~")]
    assert f"web~{web_id}" in stack.ids(OPS)
    # The admin acts on any tenant's task; the tenant then sees what the admin did.
    assert stack.call(OPS, "DELETE", f"/tasks/web~{web_id}").status_code == 200
    assert stack.call(WEB, "GET", f"/tasks/{web_id}").json()["state"] == "aborted"
    assert stack.call(OPS, "POST", f"/tasks/web~{web_id}/retry").status_code == 202
    wait_state_as(stack, WEB, web_id, {"succeeded"})
    # No key at all: 401, as before.
    assert stack.call(None, "GET", f"/tasks/{web_id}").status_code == 401
    # Every role reads /stats (the dashboard's first call): gauges and workers, no task; /metrics has none either.
    for key in (WEB, WEB_READ, CI, OPS):
        stats = stack.call(key, "GET", "/stats")
        assert stats.status_code == 200
        assert set(stats.json()) == {"queue", "queues", "tasks", "workers", "time"}  # counts, no task
        assert web_id not in stats.text
    metrics = httpx.get(f"{stack.base}/metrics", timeout=10).text
    assert web_id not in metrics
    assert not [key for key in (WEB, WEB_READ, CI, OPS) if key in metrics]


def wait_state_as(stack: Stack, key: str, task_id: str, wanted: set[str], timeout: float = 20) -> None:
    """Poll ``GET /tasks/{id}`` as ``key`` until the task's state is one of ``wanted``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.call(key, "GET", f"/tasks/{task_id}").json().get("state") in wanted:
            return
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {wanted}")


def test_lists_show_each_tenant_its_own_tasks_with_every_filter(stack: Stack) -> None:
    mine = {key: [unique(name) for _ in range(3)] for key, name in ((WEB, "lweb"), (CI, "lci"))}
    for key, ids in mine.items():
        for task_id in ids:
            assert stack.submit(key, {"task": "echo", "id": task_id, "delay_seconds": 600}).status_code == 202
        assert stack.call(key, "DELETE", f"/tasks/{ids[0]}").status_code == 200
    for key, other in ((WEB, CI), (CI, WEB)):
        for params in ({}, {"limit": 1}, {"state": "deferred"}, {"state": "aborted"}, {"task": "echo", "limit": 2}):
            seen = stack.ids(key, **params)
            assert not set(seen) & set(mine[other]), params
            expected = {"deferred": set(mine[key][1:]), "aborted": {mine[key][0]}}.get(params.get("state", ""), set())
            assert (expected or set(mine[key])) <= set(seen), params
    admin_seen = stack.ids(OPS, limit=2)
    for key, name in ((WEB, "web"), (CI, "ci")):
        assert {f"{name}~{i}" for i in mine[key]} <= set(admin_seen)
    bad = stack.call(OPS, "GET", "/tasks", params={"tenant": "no~such"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")
    for key in (WEB, CI):
        for task_id in mine[key][1:]:
            stack.call(key, "DELETE", f"/tasks/{task_id}")


def test_list_cursors_are_sealed_so_a_tenant_can_neither_read_nor_write_a_position(stack: Stack) -> None:
    """A cursor names the index entry a walk stopped at, and a tenant's walk steps over other tenants' entries:
    plain, a cursor could name another tenant's task and its submit time, and a tenant writing cursors of its own
    (with a filter that matches none of its tasks) could read every id in the index, 10,000 a request."""
    ids = [unique("cur") for _ in range(2)]
    for task_id in ids:
        assert stack.submit(WEB, {"task": "echo", "id": task_id, "delay_seconds": 600}).status_code == 202
    page = stack.call(WEB, "GET", "/tasks", params={"limit": 1})
    cursor = page.json()["next_cursor"]
    assert cursor is not None
    assert "web~" not in base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("latin-1")
    assert stack.call(WEB, "GET", "/tasks", params={"limit": 1, "cursor": cursor}).status_code == 200
    written = base64.urlsafe_b64encode(f"{time.time() * 1e6:.0f} ci~anything".encode()).decode().rstrip("=")
    forged = stack.call(WEB, "GET", "/tasks", params={"task": "no_such_task", "cursor": written})
    assert (forged.status_code, forged.json()["error"]["code"]) == (422, "invalid_request")
    for task_id in ids:
        stack.call(WEB, "DELETE", f"/tasks/{task_id}")


def test_a_tenant_lists_its_workflows_in_bounded_pages_among_many_others(stack: Stack) -> None:
    """Every tenant's workflows share one index: a tenant with one workflow behind 25,000 newer ones of another
    tenant walked all of them in one request. A request now examines at most 10,000 entries (as GET /tasks
    does), answers short pages with a sealed cursor, and following the cursors finds the workflow, once."""
    flow = unique("flow-among")
    created = stack.call(WEB, "POST", "/workflows", json={"workflow": {"chain": [{"task": "echo"}]}, "id": flow})
    assert created.status_code == 202
    index = keys.flow_index(stack.queue)
    client = redis.Redis.from_url(stack.redis_url)
    newer = time.time() * 1e6 + 1e9  # after the real one, and after any other test's
    others = {f"ci~crowd-{n:05}": newer + n for n in range(25_000)}
    client.zadd(index, others)
    try:
        pages: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(pages) < 10:
            params = {"limit": 50} | ({"cursor": cursor} if cursor else {})
            pages.append(stack.call(WEB, "GET", "/workflows", params=params).json())
            cursor = pages[-1]["next_cursor"]
            if cursor is None:
                break
        assert pages[0]["workflows"] == []  # it stopped early ...
        assert pages[0]["next_cursor"] is not None  # ... and said so
        assert "ci~" not in json.dumps(pages)
        found = [w["id"] for page in pages for w in page["workflows"]]
        assert found.count(flow) == 1
        assert pages[-1]["next_cursor"] is None
        forged = stack.call(WEB, "GET", "/workflows", params={"cursor": "bm90IG9uZSBvZiBvdXJz"})
        assert (forged.status_code, forged.json()["error"]["code"]) == (422, "invalid_request")
    finally:
        client.zrem(index, *others)
        client.close()


def test_tasks_from_before_tenants_are_for_admins_only(stack: Stack) -> None:
    # An API with auth off on the same queue stands in for the version before the upgrade.
    env = relay_env(stack.redis_url, RELAY_QUEUE_NAME=stack.queue)
    old_api, old_base = start_api(stack.log_dir, env)
    try:
        old = httpx.post(f"{old_base}/tasks", json={"task": "echo", "delay_seconds": 600}, timeout=10).json()["id"]
    finally:
        old_api.stop()
    for key in (WEB, WEB_READ, CI):
        assert stack.call(key, "GET", f"/tasks/{old}").status_code == 404
        assert old not in stack.ids(key)
    assert stack.call(OPS, "GET", f"/tasks/{old}").json()["tenant"] is None
    assert old in stack.ids(OPS)
    assert stack.call(OPS, "DELETE", f"/tasks/{old}").status_code == 200


def test_submit_stream_and_sse_name_the_tenants_own_id(stack: Stack) -> None:
    task_id = unique("streamed")
    with httpx.stream(
        "POST",
        f"{stack.base}/tasks",
        json={"task": "echo", "id": task_id},
        headers={"X-API-Key": CI, "Accept": "text/event-stream"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["location"] == f"/tasks/{task_id}"
        messages = [m for m in sse_messages(response) if "data" in m]
    assert messages
    assert {json.loads(m["data"])["task_id"] for m in messages} == {task_id}
    admin_events = stream(stack, OPS, f"ci~{task_id}", "application/x-ndjson")[2]
    assert {json.loads(line)["task_id"] for line in admin_events.splitlines() if line} == {f"ci~{task_id}"}


FUZZ_EXAMPLES = 300


def test_fuzzed_ids_and_headers_never_reach_another_tenants_task(stack: Stack) -> None:
    """Tenant ci, with every way of presenting its key and ids derived from web's in every way we could think
    of, never reads, aborts or retries one of web's tasks."""
    secret = unique("fuzz-secret")
    waiting, ended = unique("fuzz-waiting"), unique("fuzz-ended")
    for task_id in (waiting, ended):
        body = {"task": "echo", "id": task_id, "kwargs": {"message": secret}, "delay_seconds": 600}
        assert stack.submit(WEB, body).status_code == 202
    assert stack.call(WEB, "DELETE", f"/tasks/{ended}").status_code == 200
    web_ids = [waiting, ended]

    def variants(task_id: str) -> list[str]:
        return [
            task_id,
            f"web~{task_id}",
            f"web%7E{task_id}",
            f"web%7e{task_id}",
            f"ci~web~{task_id}",
            f"~{task_id}",
            f"{task_id}~",
            task_id.upper(),
            f"web~{task_id}/",
            f"./{task_id}",
            f"ci~{task_id}",
            f"web~~{task_id}",
            f"web:{task_id}",
            f" {task_id}",
        ]

    ids = st.one_of(
        st.sampled_from([v for t in web_ids for v in variants(t)]),
        st.text(alphabet="webci~:%7E.-_/ " + waiting[-12:], min_size=1, max_size=40),
    )
    presented = st.sampled_from(
        [
            {"X-API-Key": CI},
            {"Authorization": f"Bearer {CI}"},
            {"authorization": f"bearer {CI}"},
            {"X-API-Key": CI, "Authorization": f"Bearer {WEB}"},  # the X-API-Key is the one used
            {"X-API-Key": CI, "X-Relay-Tenant": "web"},
            {"X-API-Key": CI, "X-Forwarded-User": "web", "Forwarded": "for=web"},
        ]
    )
    routes = st.sampled_from(["get", "ndjson", "sse", "delete", "retry", "list", "resubmit"])

    @given(task_id=ids, headers=presented, route=routes)
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def never_crosses(task_id: str, headers: dict[str, str], route: str) -> None:
        path = f"{stack.base}/tasks/{quote(task_id, safe='%~:/')}"
        with httpx.Client(headers=headers, timeout=15) as client:
            if route in ("ndjson", "sse"):
                accept = "text/event-stream" if route == "sse" else "application/x-ndjson"
                with client.stream("GET", path + "/events", headers={"Accept": accept}) as response:
                    status, text = response.status_code, response.read().decode(errors="replace")
            elif route == "list":
                response = client.get(f"{stack.base}/tasks", params={"tenant": task_id, "limit": 500})
                status, text = response.status_code, response.text
                assert status in (403, 422), text
            elif route == "resubmit":  # ci's own task with this id, if it is one: never web's
                response = client.post(f"{stack.base}/tasks", json={"task": "echo", "id": task_id})
                status, text = response.status_code, response.text
                assert status in (200, 202, 409, 422), text
            else:
                method, suffix = {"get": ("GET", ""), "delete": ("DELETE", ""), "retry": ("POST", "/retry")}[route]
                response = client.request(method, path + suffix)
                status, text = response.status_code, response.text
            assert secret not in text
            if status < 300 and route in ("get", "delete", "retry", "resubmit"):
                assert_only_ci(text)

    def assert_only_ci(text: str) -> None:
        """Any task a 2xx answer names is one of ci's own (a task view says so; other answers name an id)."""
        body = json.loads(text)
        for view in body.get("tasks", [body]):
            if "tenant" in view:
                assert view["tenant"] == "ci", text
            else:
                assert stack.call(OPS, "GET", f"/tasks/ci~{view['id']}").status_code == 200, text

    never_crosses()
    # Nothing of web's changed: the waiting task still waits, the ended one was not retried.
    assert stack.call(WEB, "GET", f"/tasks/{waiting}").json()["state"] == "deferred"
    assert stack.call(WEB, "GET", f"/tasks/{ended}").json()["state"] == "aborted"
    assert secret not in stack.call(CI, "GET", "/tasks", params={"limit": 500}).text
    stack.call(WEB, "DELETE", f"/tasks/{waiting}")


def relay_cli(stack: Stack, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {"RELAY_URL": stack.base, "RELAY_API_KEY": key}
    return subprocess.run([str(BIN / "relay"), *args], capture_output=True, text=True, timeout=60, env=env)


def test_relay_ls_and_the_client_list_the_keys_own_tasks_and_admins_filter_by_tenant(stack: Stack) -> None:
    mine = {"web": unique("cli-web"), "ci": unique("cli-ci")}
    for key, name in ((WEB, "web"), (CI, "ci")):
        assert stack.submit(key, {"task": "echo", "id": mine[name], "delay_seconds": 600}).status_code == 202

    def listed(key: str, *args: str) -> set[str]:
        done = relay_cli(stack, key, "ls", "--limit", "500", "--json", *args)
        assert done.returncode == 0, done.stderr
        return {json.loads(line)["id"] for line in done.stdout.splitlines() if line.strip()}

    assert mine["web"] in listed(WEB)
    assert mine["ci"] not in listed(WEB)
    assert {f"web~{mine['web']}", f"ci~{mine['ci']}"} <= listed(OPS)
    by_tenant = listed(OPS, "--tenant", "web")
    assert f"web~{mine['web']}" in by_tenant
    assert not [i for i in by_tenant if not i.startswith("web~")]
    refused = relay_cli(stack, CI, "ls", "--tenant", "web")
    assert refused.returncode != 0
    assert "403" in refused.stderr
    assert "forbidden" in refused.stderr
    with Client(stack.base, api_key=CI) as client:
        assert [v.id for v in client.list(limit=500)].count(mine["ci"]) == 1
        with pytest.raises(ForbiddenError):
            list(client.list(tenant="web"))
        with pytest.raises(TaskNotFound):
            client.get(mine["web"])
    for key, name in ((WEB, "web"), (CI, "ci")):
        stack.call(key, "DELETE", f"/tasks/{mine[name]}")


def redis_calls_naming(stack: Stack, marker: str, request: Callable[[], object]) -> list[str]:
    """The Redis commands the API sends while ``request`` runs that name ``marker`` (MONITOR), ``marker``
    written as ``<id>`` and numbers (times) as ``N``: what a request does in Redis for the id it names."""
    client = redis.Redis.from_url(stack.redis_url)
    lines: list[str] = []
    with client.monitor() as monitor:
        request()
        sentinel = unique("sentinel")
        client.get(sentinel)  # the last line MONITOR shows for this request
        for seen in monitor.listen():
            command = str(seen["command"])
            if sentinel in command:
                break
            if marker in command:
                lines.append(re.sub(r"\d+", "N", command.replace(marker, "<id>")))
    client.close()
    return lines


def test_a_foreign_id_costs_redis_exactly_what_an_unknown_one_does(stack: Stack) -> None:
    foreign, never_used = unique("timing"), unique("timing")
    assert stack.submit(WEB, {"task": "echo", "id": foreign, "delay_seconds": 600}).status_code == 202
    for method, suffix, headers in (
        ("GET", "", {}),
        ("GET", "/events", {"Accept": "application/x-ndjson"}),
        ("GET", "/events", {"Accept": "text/event-stream"}),
        ("DELETE", "", {}),
        ("POST", "/retry", {}),
    ):
        stack.call(CI, method, f"/tasks/{unique('warm-up')}{suffix}", headers=headers)  # the script cache, once
        calls = {
            task_id: redis_calls_naming(
                stack, task_id, partial(stack.call, CI, method, f"/tasks/{task_id}{suffix}", headers=headers)
            )
            for task_id in (foreign, never_used)
        }
        assert calls[foreign] == calls[never_used], (method, suffix)
        assert calls[foreign], (method, suffix)  # the request did look the id up (in ci's namespace)
    assert stack.call(WEB, "GET", f"/tasks/{foreign}").json()["state"] == "deferred"
    stack.call(WEB, "DELETE", f"/tasks/{foreign}")


def test_stats_show_each_key_only_the_running_tasks_it_may_see(stack: Stack) -> None:
    task_id = unique("running")
    body = {"task": "sleep", "id": task_id, "kwargs": {"seconds": 60, "steps": 60}}
    assert stack.submit(WEB, body).status_code == 202

    def running(key: str) -> list[str]:
        workers = stack.call(key, "GET", "/stats").json()["workers"]
        return [run["id"] for worker in workers for run in worker["running_tasks"]]

    wait_until(lambda: f"web~{task_id}" in running(OPS), 20, "the admin to see web's task running")
    assert task_id in running(WEB)
    assert task_id in running(WEB_READ)
    assert f"web~{task_id}" not in running(WEB)
    assert not [i for i in running(CI) if task_id in i]
    assert stack.call(WEB, "DELETE", f"/tasks/{task_id}").status_code == 202


def test_workflows_follow_the_same_tenant_rules(stack: Stack) -> None:
    """A tenant's workflow: its own ids everywhere (the tree, every event, its steps), another tenant's and a
    read key's requests answered as for an id nobody used, an admin sees it under its stored id."""
    flow = unique("flow")
    canvas = {"chain": [{"task": "echo", "args": ["web's secret"]}, {"task": "echo", "immutable": True}]}
    assert stack.call(WEB_READ, "POST", "/workflows", json={"workflow": canvas}).status_code == 403
    created = stack.call(WEB, "POST", "/workflows", json={"workflow": canvas, "id": flow})
    assert (created.status_code, created.json()["id"]) == (202, flow)
    wait_until(lambda: stack.call(WEB, "GET", f"/workflows/{flow}").json()["state"] == "succeeded", 20, "the workflow")
    view = stack.call(WEB, "GET", f"/workflows/{flow}").json()
    assert (view["id"], view["tenant"]) == (flow, "web")
    assert [c["task_id"] for c in view["tree"]["children"]] == [f"{flow}:0", f"{flow}:1"]
    assert stack.call(WEB, "GET", f"/tasks/{flow}:0").json()["result"] == {"echo": "web's secret"}
    with httpx.stream("GET", f"{stack.base}/workflows/{flow}/events", headers={"X-API-Key": WEB}, timeout=30) as r:
        events = list(ndjson_lines(r))
    assert events[-1]["type"] == "workflow_end"
    assert b"web~" not in json.dumps(events).encode()
    assert {e["task_id"] for e in events if "task_id" in e} == {f"{flow}:0", f"{flow}:1"}
    for path in (f"/workflows/{flow}", f"/workflows/{flow}/events", f"/tasks/{flow}:0"):
        foreign = stack.call(CI, "GET", path)
        assert foreign.status_code == 404
        assert b"secret" not in foreign.content
    for method, path in (("DELETE", f"/workflows/{flow}"), ("POST", f"/workflows/{flow}/retry")):
        assert stack.call(CI, method, path).status_code == 404
        assert stack.call(WEB_READ, method, path).status_code == 403
    assert flow not in [w["id"] for w in stack.call(CI, "GET", "/workflows").json()["workflows"]]
    assert flow in [w["id"] for w in stack.call(WEB, "GET", "/workflows").json()["workflows"]]
    admin = stack.call(OPS, "GET", f"/workflows/web~{flow}").json()
    assert admin["tree"]["children"][0]["task_id"] == f"web~{flow}:0"
