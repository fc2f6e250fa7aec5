"""One trace from a submit to its final event: the caller's ``traceparent`` -> the API's span of the POST ->
the worker's span of each try, and every event of the run carries that trace's id.

In-process with the OpenTelemetry SDK's in-memory exporter (the real Sanic app and arq's real Worker in this
process), then across real processes exporting over OTLP/HTTP as docs/operations.md (Tracing) sets it up, then with
OpenTelemetry absent (Relay still carries the caller's context through)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from arq.worker import create_worker
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sanic import Sanic

import worker.settings
from api.app import create_app
from bench.harness.client import read_events, submit, types, wait_state
from bench.harness.processes import free_port, start_worker, wait_until
from shared.settings import get_settings
from tests.conftest import StartApi, StartWorker
from tests.support.environment import offer_test_tasks, relay_env
from tests.support.otlp import OtlpReceiver, ReceivedSpan

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
OTHER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
FINAL = {"succeeded", "failed", "aborted"}
TRACED_TASKS = ("traced", "traced_sync")  # tests/support/tasks.py: each opens a span of its own
TRACED_SPANS = ("inside an async task", "inside a plain task")


def queue() -> str:
    return f"relay:trace:{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def memory() -> Iterator[InMemorySpanExporter]:
    """The SDK with an in-memory exporter, as this process's tracer provider (set once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.fail("another tracer provider was set in this process first")
    yield exporter
    provider.shutdown()


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def hex_span(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def parent_of(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


async def test_one_trace_from_the_post_to_the_final_event_in_memory(
    memory: InMemorySpanExporter, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = queue()
    monkeypatch.setenv("RELAY_QUEUE_NAME", name)
    monkeypatch.setenv("RELAY_REDIS_URL", redis_url)
    monkeypatch.setattr(Sanic, "test_mode", True)  # another app named "relay" may exist in this process
    get_settings.cache_clear()
    memory.clear()
    offer_test_tasks(redis_url, name)  # the worker below starts after the submits: offer its tasks already
    app = create_app()
    port = free_port()
    server = await app.create_server("127.0.0.1", port, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    pool = ArqRedis.from_url(redis_url)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            body = {"task": "sleep", "kwargs": {"seconds": 0.2, "steps": 2}}
            response = await client.post("/tasks", json=body, headers={"traceparent": TRACEPARENT})
            assert response.status_code == 202, response.text
            task_id = response.json()["id"]
            inner = [(await client.post("/tasks", json={"task": name})).json()["id"] for name in TRACED_TASKS]
            arq_worker = create_worker(
                worker.settings, redis_pool=pool, queue_name=name, burst=True, handle_signals=False, poll_delay=0.05
            )
            await arq_worker.async_run()
            await worker.setup.on_shutdown(arq_worker.ctx)
            reply = await client.get(f"/tasks/{task_id}/events")
            events = [httpx.Response(200, content=line).json() for line in reply.content.splitlines() if line]
            results = [(await client.get(f"/tasks/{i}")).json()["result"] for i in inner]
    finally:
        await pool.aclose()
        await server.before_stop()
        await server.close()
        await server.after_stop()
        get_settings.cache_clear()

    assert types(events) == ["started", "progress", "progress", "result", "end"]
    spans = memory.get_finished_spans()
    post = [s for s in spans if s.name == "POST /tasks" and hex_trace(s) == TRACE_ID]
    run = [s for s in spans if s.name == "run sleep"]
    assert (len(post), len(run)) == (1, 1), [s.name for s in spans]
    api_span, worker_span = post[0], run[0]
    # One trace: the caller's, continued by the API's span, then the worker's span as its child.
    assert hex_trace(api_span) == hex_trace(worker_span) == TRACE_ID
    assert (api_span.kind, parent_of(api_span)) == (SpanKind.SERVER, CALLER_SPAN)
    assert (worker_span.kind, parent_of(worker_span)) == (SpanKind.CONSUMER, hex_span(api_span))
    assert worker_span.attributes is not None
    assert worker_span.attributes["relay.task.id"] == task_id
    assert worker_span.attributes["relay.task.outcome"] == "succeeded"
    assert {e["trace_id"] for e in events} == {TRACE_ID}  # every event, the final one included
    assert (worker_span.start_time or 0) >= (api_span.start_time or 0)

    # A task's own spans are children of the worker's span of its try, from async def and plain def alike.
    # Submitted without a traceparent, their traces start at the API's span.
    for name, inside, trace_id in zip(TRACED_TASKS, TRACED_SPANS, results, strict=True):
        (run_span,) = [s for s in spans if s.name == f"run {name}"]
        (task_span,) = [s for s in spans if s.name == inside]
        (root,) = [s for s in spans if s.name == "POST /tasks" and hex_span(s) == parent_of(run_span)]
        assert parent_of(root) is None
        assert parent_of(task_span) == hex_span(run_span)
        assert hex_trace(task_span) == hex_trace(run_span) == hex_trace(root) == trace_id


@pytest.fixture
def collector() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def exporting(collector: OtlpReceiver) -> dict[str, str]:
    """What docs/operations.md tells an operator to set, plus a short batch delay so the test need not wait 5 s."""
    return {
        "RELAY_TRACE_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def wait_for_spans(collector: OtlpReceiver, wanted: dict[str, int]) -> list[ReceivedSpan]:
    def arrived() -> bool:
        names = [s.name for s in collector.snapshot()]
        return all(names.count(name) >= count for name, count in wanted.items())

    wait_until(arrived, 20, f"spans {wanted} at the collector")
    return collector.snapshot()


def test_one_trace_across_real_processes_over_otlp(
    collector: OtlpReceiver, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), **exporting(collector)}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    body = {"task": "flaky", "kwargs": {"failures": 1}}  # fails once, retried by the engine, then succeeds
    response = submit(base, body, headers={"traceparent": TRACEPARENT})
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]
    events = read_events(base, task_id)
    assert types(events) == ["started", "retrying", "started", "result", "end"]
    assert {e["trace_id"] for e in events} == {TRACE_ID}  # the retried try too: its record kept the context

    spans = wait_for_spans(collector, {"POST /tasks": 1, "run flaky": 2})
    (api_span,) = [s for s in spans if s.name == "POST /tasks"]
    tries = sorted((s for s in spans if s.name == "run flaky"), key=lambda s: s.attributes["relay.task.try"])
    assert (api_span.service, api_span.kind, api_span.trace_id) == ("relay-api", "SPAN_KIND_SERVER", TRACE_ID)
    assert api_span.parent_span_id == CALLER_SPAN
    assert api_span.attributes["http.route"] == "/tasks"
    for span in tries:
        assert (span.service, span.kind, span.trace_id) == ("relay-worker", "SPAN_KIND_CONSUMER", TRACE_ID)
        assert span.parent_span_id == api_span.span_id
        assert span.attributes["relay.task.id"] == task_id
    assert [s.attributes["relay.task.outcome"] for s in tries] == ["retrying", "succeeded"]
    assert [s.error for s in tries] == [True, False]


def test_a_manual_retry_runs_in_the_retry_requests_trace(
    collector: OtlpReceiver, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), **exporting(collector)}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    response = submit(base, {"task": "fail", "kwargs": {"message": "once"}}, headers={"traceparent": TRACEPARENT})
    task_id = response.json()["id"]
    wait_state(base, task_id, {"failed"})
    retry_parent = f"00-{OTHER_TRACE_ID}-{CALLER_SPAN}-01"
    retried = httpx.post(f"{base}/tasks/{task_id}/retry", headers={"traceparent": retry_parent}, timeout=10)
    assert retried.status_code == 202, retried.text
    wait_state(base, task_id, {"failed"})
    events = read_events(base, task_id)
    first_end = types(events).index("end")
    assert {e["trace_id"] for e in events[: first_end + 1]} == {TRACE_ID}
    assert events[first_end + 1]["type"] == "requeued"
    assert {e["trace_id"] for e in events[first_end + 1 :]} == {OTHER_TRACE_ID}
    spans = wait_for_spans(collector, {"POST /tasks/<task_id:str>/retry": 1, "run fail": 2})
    (retry_span,) = [s for s in spans if s.name == "POST /tasks/<task_id:str>/retry"]
    second_run = next(s for s in spans if s.name == "run fail" and s.trace_id == OTHER_TRACE_ID)
    assert second_run.parent_span_id == retry_span.span_id


def test_only_a_valid_traceparent_names_a_trace(relay: str) -> None:
    # No tracer provider set up in these processes: only the caller's context can name a trace.
    invalid = [{}, {"traceparent": "not-a-traceparent"}, {"traceparent": f"00-{'0' * 32}-{CALLER_SPAN}-01"}]
    for headers in [{"traceparent": TRACEPARENT}, *invalid]:
        response = submit(relay, {"task": "echo", "args": ["maybe traced"]}, headers=headers)
        assert response.status_code == 202, response.text
        traces = {e.get("trace_id") for e in read_events(relay, response.json()["id"])}
        assert traces == ({TRACE_ID} if headers.get("traceparent") == TRACEPARENT else {None}), headers


BLOCKER = """
import sys


class _NoOpenTelemetry:
    \"\"\"As if the otel extra were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoOpenTelemetry())
"""


@pytest.fixture
def without_opentelemetry(tmp_path: Path) -> dict[str, str]:
    """Environment for processes that cannot import OpenTelemetry (a sitecustomize that refuses it)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": str(tmp_path)}


def test_relay_works_without_opentelemetry_and_still_carries_the_callers_trace(
    without_opentelemetry: dict[str, str], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), **without_opentelemetry}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    response = submit(base, {"task": "count", "kwargs": {"n": 2, "interval": 0}}, headers={"traceparent": TRACEPARENT})
    assert response.status_code == 202, response.text
    events = read_events(base, response.json()["id"])
    assert types(events) == ["started", "partial", "partial", "result", "end"]
    assert {e["trace_id"] for e in events} == {TRACE_ID}


def test_an_exporter_without_opentelemetry_stops_the_process_with_one_line(
    without_opentelemetry: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    env = relay_env(redis_url, RELAY_TRACE_EXPORTER="otlp", **without_opentelemetry)
    proc = start_worker(tmp_path, env, wait_ready=False)
    try:
        assert proc.wait(30) == 78
    finally:
        proc.stop()
    line = (
        "RELAY_TRACE_EXPORTER='otlp' is invalid: otlp needs OpenTelemetry, which is not installed: "
        "pip install 'relay[otel]'"
    )
    assert line in proc.output().splitlines()


def test_the_console_exporter_prints_each_processs_spans(spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), "RELAY_TRACE_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    api, base = spawn_api(**env)
    worker = spawn_worker(OTEL_SERVICE_NAME="reports-worker", **env)
    response = submit(base, {"task": "echo", "args": ["printed"]}, headers={"traceparent": TRACEPARENT})
    wait_state(base, response.json()["id"], {"succeeded"})
    for proc, name, service in ((api, "POST /tasks", "relay-api"), (worker, "run echo", "reports-worker")):
        wait_until(lambda p=proc, n=name: f'"name": "{n}"' in p.output(), 20, f"{name} printed")  # type: ignore[misc]
        assert f'"trace_id": "0x{TRACE_ID}"' in proc.output()
        assert f'"service.name": "{service}"' in proc.output()
