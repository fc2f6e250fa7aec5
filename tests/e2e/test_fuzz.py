"""Schemathesis fuzzes the API from its own OpenAPI document: no 5xx, and every response (errors
included) matches the documented status codes, content types and schemas."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bench.harness.processes import start_api
from tests.support.environment import relay_env

EXAMPLES_PER_OPERATION = 150


@pytest.fixture(scope="module")
def fuzz_target(redis_url: str, log_dir: Path) -> Iterator[str]:
    """An API on its own Redis database and queue, with no worker: fuzzed submits are accepted but never
    run, and no other test's tasks are visible."""
    fuzz_db = redis_url.rsplit("/", 1)[0] + "/3"
    api, base = start_api(log_dir, relay_env(fuzz_db, RELAY_QUEUE_NAME=f"relay:fuzz:{uuid.uuid4().hex[:8]}"))
    yield base
    api.stop()
    assert "Traceback" not in api.output()


def operations(base: str) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_document_covers_every_route(fuzz_target: str) -> None:
    labels = {f"{op.method.upper()} {op.path}" for op in operations(fuzz_target)}
    assert labels == {
        "GET /",
        "GET /health/live",
        "GET /health/ready",
        "GET /metrics",
        "GET /stats",
        "POST /tasks",
        "GET /tasks",
        "GET /tasks/{task_id}",
        "POST /tasks/{task_id}/retry",
        "DELETE /tasks/{task_id}",
        "GET /tasks/{task_id}/events",
        "POST /workflows",
        "GET /workflows",
        "GET /workflows/{workflow_id}",
        "DELETE /workflows/{workflow_id}",
        "POST /workflows/{workflow_id}/retry",
        "GET /workflows/{workflow_id}/events",
    }


def test_api_conforms_to_its_openapi_document(fuzz_target: str) -> None:
    # Event streams of existing tasks are open-ended by design (covered by the e2e tests), so the
    # events operation is fuzzed first, while no fuzzed submit has created a task it could follow.
    ordered = sorted(operations(fuzz_target), key=lambda op: not op.path.endswith("/events"))
    for operation in ordered:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def conforms(case: schemathesis.Case) -> None:
            # Valid-looking data may still be refused on meaning (a timeout above the task's maximum,
            # arguments the task does not take): 422 is the documented answer, not a failure.
            case.call_and_validate(timeout=10, excluded_checks=[positive_data_acceptance])

        conforms()
