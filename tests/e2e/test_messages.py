"""Error answers say what is true and what to do: the limit and its setting, what differs, what exists."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from bench.harness.client import submit
from shared.errors import MAX_NAMES_IN_MESSAGE
from worker.tasks import registry


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_413_states_the_limit_and_its_setting(relay: str) -> None:
    payload = b'{"task": "echo", "args": ["' + b"x" * 2_000_000 + b'"]}'
    response = httpx.post(f"{relay}/tasks", content=payload, timeout=10)
    assert response.status_code == 413
    assert _error(response) == {
        "code": "payload_too_large",
        "message": "the body is larger than 1048576 bytes, the limit set by RELAY_MAX_BODY_BYTES",
        "details": {"limit_bytes": 1048576},
    }


def test_413_for_headers_names_the_header_limit(relay: str) -> None:
    response = httpx.get(f"{relay}/", headers={"X-Big": "a" * 20_000}, timeout=10)
    assert response.status_code == 413
    assert _error(response)["message"] == "the request headers are larger than 8192 bytes"
    assert _error(response)["details"] == {"limit_bytes": 8192}


def test_empty_body_says_it_is_empty(relay: str) -> None:
    response = httpx.post(f"{relay}/tasks", content=b"", timeout=10)
    assert response.status_code == 400
    assert _error(response)["message"] == 'the body is empty: send a JSON object such as {"task": "echo"}'


def test_conflict_says_the_task_differs(relay: str) -> None:
    task_id = f"conflict-{uuid.uuid4().hex[:12]}"
    assert submit(relay, {"task": "echo", "id": task_id}).status_code == 202
    response = submit(relay, {"task": "count", "id": task_id})
    assert response.status_code == 409
    assert _error(response) == {
        "code": "id_conflict",
        "message": f"id {task_id!r} is already taken by a 'echo' task (this submit is 'count')",
        "details": {"differs": "task", "existing_task": "echo"},
    }


def test_conflict_names_the_arguments_that_differ(relay: str) -> None:
    task_id = f"conflict-{uuid.uuid4().hex[:12]}"
    first = {"task": "sleep", "kwargs": {"seconds": 0.1, "steps": 1}, "id": task_id, "delay_seconds": 60}
    assert submit(relay, first).status_code == 202
    response = submit(relay, first | {"kwargs": {"seconds": 0.2, "steps": 1}, "timeout_seconds": 5})
    assert response.status_code == 409
    assert _error(response) == {
        "code": "id_conflict",
        "message": f"id {task_id!r} is already taken by a 'sleep' task with other arguments (seconds, timeout_seconds)",
        "details": {"differs": "arguments", "fields": ["seconds", "timeout_seconds"]},
    }
    httpx.delete(f"{relay}/tasks/{task_id}", timeout=10)


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("GET", "/events")])
def test_malformed_id_is_an_unknown_task(relay: str, method: str, suffix: str) -> None:
    response = httpx.request(method, f"{relay}/tasks/has%20space{suffix}", timeout=10)
    assert response.status_code == 404
    assert _error(response)["code"] == "task_not_found"
    assert _error(response)["details"] == {"state": "unknown"}


def test_unknown_task_lists_the_registered_ones(relay: str) -> None:
    names = sorted(spec.name for spec in registry)
    assert {"count", "echo", "fail", "sleep"} <= set(names)
    response = submit(relay, {"task": "qqqqq"})  # near no registered name
    assert response.status_code == 422
    more = f" and {len(names) - MAX_NAMES_IN_MESSAGE} more" if len(names) > MAX_NAMES_IN_MESSAGE else ""
    assert _error(response) == {
        "code": "unknown_task",
        "message": f"no task is registered as 'qqqqq'; registered: {', '.join(names[:MAX_NAMES_IN_MESSAGE])}{more}",
        "details": {"registered": names},
    }


def test_unknown_task_suggests_the_nearest_name(relay: str) -> None:
    response = submit(relay, {"task": "ehco"})
    assert response.status_code == 422
    error = _error(response)
    assert error["message"].startswith("no task is registered as 'ehco' (did you mean 'echo'?); registered: ")
    assert error["details"]["did_you_mean"] == "echo"


def test_invalid_arguments_name_the_first_problem_and_count_the_others(relay: str) -> None:
    response = submit(relay, {"task": "count", "kwargs": {"n": "3", "interval": "x", "extra": 1}})
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid_arguments"
    assert len(error["details"]) == 3
    first = error["details"][0]
    assert error["message"] == (
        f"the arguments do not fit the task: {'.'.join(first['loc'])}: {first['msg']} (and 2 more problems)"
    )
    one = _error(submit(relay, {"task": "count", "kwargs": {"n": "3"}}))
    assert one["message"] == "the arguments do not fit the task: n: '3' is not of type 'integer'"


def test_a_request_off_the_schema_names_its_first_problem(relay: str) -> None:
    response = submit(relay, {"task": "echo", "delay_seconds": "soon"})
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("the request does not match the schema: delay_seconds: ")
