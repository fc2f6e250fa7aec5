"""The blocking client against the real API and worker processes."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from bench.harness.processes import wait_until
from relay.client import (
    Client,
    ErrorInfo,
    IdConflict,
    InvalidArguments,
    InvalidRequest,
    NotAbortable,
    NotRetryable,
    QueueFull,
    RelayError,
    ResultTimeout,
    RetryPolicy,
    TaskAborted,
    TaskFailed,
    TaskNotFound,
    UnauthorizedError,
    UnknownTask,
)
from relay.client.senders import Urllib3Sender
from tests.conftest import StartApi, StartWorker
from tests.support.forwarder import Forwarder, address


def queue() -> str:
    return f"relay:client:{uuid.uuid4().hex[:8]}"


def refuse_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on a request through httpx fails the test: the default client must not fall back to it (called
    once the processes are up: the harness waits for them over httpx)."""

    def refused(*args: object, **kwargs: object) -> httpx.Response:
        raise AssertionError("a request went through httpx")

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", refused)


def test_submit_then_result(relay: str) -> None:
    with Client(relay) as client:
        handle = client.submit("echo", "hi")
        assert handle.submitted is not None
        assert handle.submitted.created
        assert handle.result(timeout=20) == {"echo": "hi"}
        assert handle.get(timeout=20) == {"echo": "hi"}  # Celery's spelling
        view = handle.state()
    assert view.state == "succeeded"
    assert view.is_final
    assert view.arguments == {"message": "hi"}
    assert view.tries == 1
    assert view.started_at is not None
    assert view.finished_at is not None
    assert view.finished_at >= view.started_at


def test_events_arrive_in_order_and_resume_from_any_seq(relay: str) -> None:
    with Client(relay) as client:
        handle = client.submit("sleep", seconds=0.3, steps=3)
        events = list(handle.events())
        assert [e.type for e in events] == ["started", "progress", "progress", "progress", "result", "end"]
        assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
        assert [(e.data["current"], e.data["total"]) for e in events[1:4]] == [(1, 3), (2, 3), (3, 3)]
        assert all(e.task_id == handle.id for e in events)
        assert [e.seq for e in handle.events(after=3)] == [4, 5, 6]
        assert list(handle.events(after=6)) == []  # the API answers 204: nothing after the end


def test_failure_raises_task_failed_with_the_tasks_error(relay: str) -> None:
    with Client(relay) as client:
        handle = client.task("fail").delay(message="on purpose")
        with pytest.raises(TaskFailed) as caught:
            handle.result(timeout=20)
        view = handle.state()
    failure = caught.value
    assert (failure.error_type, failure.message, failure.task_id) == ("DemoFailure", "on purpose", handle.id)
    assert view.state == "failed"
    assert view.error == ErrorInfo("DemoFailure", "on purpose")


def test_abort_a_running_task(relay: str) -> None:
    with Client(relay) as client:
        handle = client.submit("sleep", seconds=30, steps=30)
        for event in handle.events():
            if event.type == "started":
                break
        assert handle.cancel() == "aborting"
        with pytest.raises(TaskAborted) as caught:
            handle.result(timeout=20)
        assert caught.value.task_id == handle.id
        assert handle.state().state == "aborted"
        with pytest.raises(NotAbortable):
            handle.cancel()
        assert [e.type for e in handle.events()][-2:] == ["aborted", "end"]


def test_abort_a_waiting_task(relay: str) -> None:
    with Client(relay) as client:
        handle = client.submit("echo", delay=60)
        view = handle.state()
        assert view.state == "deferred"
        assert view.scheduled_for is not None
        assert handle.cancel() == "aborted"
        with pytest.raises(TaskAborted):
            handle.result(timeout=10)


def test_result_timeout_leaves_the_task_running(relay: str) -> None:
    with Client(relay) as client:
        handle = client.submit("sleep", seconds=1.5, steps=3)
        with pytest.raises(ResultTimeout) as caught:
            handle.result(timeout=0.2)
        assert isinstance(caught.value, TimeoutError)
        assert handle.state().state in {"queued", "running"}
        assert handle.result(timeout=20) == {"slept": 1.5}


def test_own_ids_are_idempotent_and_conflicts_typed(relay: str) -> None:
    task_id = f"client-{uuid.uuid4().hex}"
    with Client(relay) as client:
        first = client.submit("echo", "a", id=task_id)
        again = client.submit("echo", "a", id=task_id)
        with pytest.raises(IdConflict) as caught:
            client.submit("echo", "b", id=task_id)
        assert client.task_handle(task_id).result(timeout=20) == {"echo": "a"}
    assert first.submitted is not None
    assert first.submitted.created
    assert again.submitted is not None
    assert not again.submitted.created
    assert (caught.value.status, caught.value.code) == (409, "id_conflict")


def test_refusals_are_typed(relay: str) -> None:
    with Client(relay) as client:
        with pytest.raises(UnknownTask) as unknown:
            client.submit("no_such_task")
        with pytest.raises(InvalidArguments) as invalid:
            client.submit("sleep", seconds="long")
        with pytest.raises(TaskNotFound) as missing:
            client.get("never-submitted")
        with pytest.raises(InvalidRequest) as elsewhere:
            client.submit("echo", queue="gpu")  # echo's only queue is default
    assert (unknown.value.status, unknown.value.code) == (422, "unknown_task")
    assert elsewhere.value.details[0]["loc"] == ["queue"]
    assert invalid.value.details
    assert invalid.value.details[0]["loc"] == ["seconds"]
    assert missing.value.details == {"state": "unknown"}


def test_celery_countdown_and_eta_defer_the_task(relay: str) -> None:
    with Client(relay) as client:
        later = client.task("echo").apply_async(args=["later"], countdown=0.5)
        eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
        at = client.task("echo").apply_async(kwargs={"message": "at"}, eta=eta)
        assert later.state().state == "deferred"
        assert at.state().state == "deferred"
        assert later.get(timeout=20) == {"echo": "later"}
        assert at.get(timeout=20) == {"echo": "at"}


def test_api_key_from_argument_or_environment(spawn_api: StartApi, monkeypatch: pytest.MonkeyPatch) -> None:
    _, base = spawn_api(RELAY_API_KEYS="k1,k2")
    monkeypatch.delenv("RELAY_API_KEY", raising=False)
    with Client(base) as client, pytest.raises(UnauthorizedError):
        client.get("t1")
    with Client(base, api_key="k2") as client, pytest.raises(TaskNotFound):
        client.get("t1")  # authenticated: the task simply does not exist
    monkeypatch.setenv("RELAY_URL", base)
    monkeypatch.setenv("RELAY_API_KEY", "k1")
    with Client() as client, pytest.raises(TaskNotFound):
        client.get("t1")


def test_events_resume_on_another_api_after_sigkill(
    spawn_api: StartApi, spawn_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    victim, first = spawn_api(**env)
    _, second = spawn_api(**env)
    spawn_worker(**env)
    refuse_httpx(monkeypatch)  # the client's default path (urllib3) is the one that must resume
    seqs: list[int] = []
    types: list[str] = []
    with Forwarder(address(first)) as proxy, Client(proxy.url, retry=RetryPolicy(max_wait_seconds=10)) as client:
        assert isinstance(client._sender, Urllib3Sender)
        handle = client.submit("count", n=40, interval=0.05)
        for event in handle.events():
            seqs.append(event.seq)
            types.append(event.type)
            if len(seqs) == 5:
                proxy.target = address(second)  # the "load balancer" now sends new connections elsewhere
                victim.send(signal.SIGKILL)
                assert victim.wait(10) == -signal.SIGKILL
    assert seqs == list(range(1, 44))  # started, 40 partials, result, end: no gap, no repeat
    assert types[0] == "started"
    assert types[-2:] == ["result", "end"]
    assert proxy.connections[0] == address(first)
    assert address(second) in proxy.connections[1:]  # the stream really continued on the other API


def test_events_follow_a_reconnect_frame_to_another_api(
    spawn_api: StartApi, spawn_worker: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    draining, first = spawn_api(RELAY_API_DRAIN_SECONDS="0.2", **env)
    _, second = spawn_api(**env)
    spawn_worker(**env)
    caplog.set_level(logging.INFO, "relay.client")
    seqs: list[int] = []
    with Forwarder(address(first)) as proxy, Client(proxy.url) as client:
        handle = client.submit("count", n=30, interval=0.1)
        for event in handle.events():
            seqs.append(event.seq)
            if len(seqs) == 3:
                proxy.target = address(second)
                draining.send(signal.SIGTERM)  # it drains, then sends a reconnect frame
    assert draining.wait(20) == 0
    assert seqs == list(range(1, 34))
    assert any("asked to reconnect" in r.getMessage() for r in caplog.records)
    assert address(second) in proxy.connections[1:]


def test_submit_waits_out_queue_full_with_retry_after(spawn_api: StartApi, caplog: pytest.LogCaptureFixture) -> None:
    _, base = spawn_api(RELAY_QUEUE_NAME=queue(), RELAY_MAX_QUEUE_DEPTH="1")  # no worker: the first task stays
    caplog.set_level(logging.INFO, "relay.client")

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "queue_full" in r.getMessage()]

    with Client(base) as client, ThreadPoolExecutor(1) as pool:
        blocker = client.submit("echo", "first")
        with Client(base, retry=RetryPolicy(max_wait_seconds=1)) as impatient, pytest.raises(QueueFull) as caught:
            impatient.submit("echo", "impatient")  # Retry-After (5 s) exceeds its budget: raised at once
        assert caught.value.retry_after == 5
        pending = pool.submit(client.submit, "echo", "second")
        wait_until(lambda: bool(refusals()), 10, "the second submit to be refused and retried")
        assert blocker.cancel() == "aborted"  # frees the queue while the client waits
        handle = pending.result(timeout=30)
        assert handle.state().state == "queued"
    assert refusals()[0].startswith("503 queue_full: ")
    assert "; retry 1 in 5.0s" in refusals()[0]


def test_list_pages_newest_first(relay: str) -> None:
    with Client(relay) as client:
        handles = [client.submit("fail", message=f"list {i}") for i in range(3)]
        for handle in handles:
            with pytest.raises(TaskFailed):
                handle.result(timeout=20)
        newest = list(client.list(state="failed", task="fail", limit=3, page_size=1))
    assert [v.id for v in newest] == [h.id for h in reversed(handles)]
    assert all(v.state == "failed" and v.task == "fail" for v in newest)


def test_retry_runs_an_aborted_task_again_and_events_keep_counting(relay: str) -> None:
    with Client(relay) as client:
        handle = client.submit("echo", "again", delay=60)
        assert handle.cancel() == "aborted"
        assert handle.retry().submitted is not None
        assert handle.result(timeout=20) == {"echo": "again"}
        events = list(handle.events())
        with pytest.raises(NotRetryable):
            handle.retry()  # it succeeded
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.data["state"] for e in events if e.type == "end"] == ["aborted", "succeeded"]


# -- the default sender (urllib3) against the real API: what the httpx path does, it does ----------------------


def test_submit_and_stream_to_the_end_over_urllib3_on_one_connection(
    relay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_httpx(monkeypatch)
    with Client(relay) as client:
        assert isinstance(client._sender, Urllib3Sender)
        for _ in range(3):
            handle = client.submit("sleep", seconds=0.2, steps=2)
            events = list(handle.events())
            assert [e.type for e in events] == ["started", "progress", "progress", "result", "end"]
            assert handle.result(timeout=20) == {"slept": 0.2}
        # each stream was read to its end and its connection reused: three round trips, one connection
        assert client._sender.pool.num_connections == 1


def test_refusals_raise_the_same_exceptions_over_urllib3_as_over_httpx(relay: str) -> None:
    task_id = f"client-{uuid.uuid4().hex}"

    def refusals(client: Client) -> list[tuple[object, ...]]:
        client.submit("echo", "a", id=task_id)
        seen = []
        for attempt in (
            lambda: client.submit("no_such_task"),
            lambda: client.submit("sleep", seconds="long"),
            lambda: client.get("never-submitted"),
            lambda: client.submit("echo", "b", id=task_id),
            lambda: client.submit("echo", queue="gpu"),
        ):
            with pytest.raises(RelayError) as caught:
                attempt()
            e = caught.value
            seen.append((type(e), e.status, e.code, e.message, e.details, e.retry_after, e.retryable))
        return seen

    with Client(relay) as default, Client(relay, transport=httpx.HTTPTransport()) as over_httpx:
        assert isinstance(default._sender, Urllib3Sender)
        assert refusals(default) == refusals(over_httpx)
    assert [kind for kind, *_ in refusals(Client(relay))] == [
        UnknownTask,
        InvalidArguments,
        TaskNotFound,
        IdConflict,
        InvalidRequest,
    ]


def test_a_hung_stream_is_cut_after_stream_read_timeout_and_resumed(
    spawn_api: StartApi, spawn_worker: StartWorker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"RELAY_QUEUE_NAME": queue(), "RELAY_HEARTBEAT_SECONDS": "0.2"}  # so a 1 s silence means a hung peer
    _, base = spawn_api(**env)
    spawn_worker(**env)
    refuse_httpx(monkeypatch)
    caplog.set_level(logging.WARNING, "relay.client")
    seqs: list[int] = []
    with Forwarder(address(base)) as proxy, Client(proxy.url, stream_read_timeout=1.0) as client:
        handle = client.submit("count", n=30, interval=0.1)
        for event in handle.events():
            seqs.append(event.seq)
            if len(seqs) == 3:
                proxy.freeze()  # this stream now hangs; only the read timeout can tell
    assert seqs == list(range(1, 34))  # started, 30 partials, result, end: no gap, no repeat
    broke = [r.getMessage() for r in caplog.records if "broke" in r.getMessage()]
    assert broke
    assert "ReadTimeout" in broke[0]  # urllib3's read timeout, judged as httpx's would be
    assert len(proxy.connections) >= 2  # the submit's, reused by the stream that hung; the resumed stream's


class CountingSender:
    """The client's sender, recording each request's method and path (``send``: a plain request; ``open``: a
    stream)."""

    def __init__(self, sender: Any) -> None:
        self.sender = sender
        self.requests: list[tuple[str, str]] = []

    def send(self, call: Any, timeouts: Any) -> Any:
        self.requests.append((call.method, call.path))
        return self.sender.send(call, timeouts)

    def open(self, call: Any, timeouts: Any) -> Any:
        self.requests.append((call.method, call.path))
        return self.sender.open(call, timeouts)

    def close(self) -> None:
        self.sender.close()


def counted(client: Client) -> CountingSender:
    counting = CountingSender(client._sender)
    client._sender = counting  # type: ignore[assignment]
    return counting


def test_run_returns_the_result_in_one_request(relay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_httpx(monkeypatch)
    with Client(relay) as client:
        sender = counted(client)
        assert client.run("echo", "once") == {"echo": "once"}
        assert client.run("count", n=3, interval=0) == {"count": 3, "sum": 6}
        assert client.run_with("echo", [], {"message": "wait"}, wait=20) == {"echo": "wait"}
    assert sender.requests == [("POST", "/tasks")] * 3  # the events came back on the submit's own response


def test_run_raises_what_result_raises(relay: str) -> None:
    with Client(relay) as client:
        with pytest.raises(TaskFailed) as failed:
            client.run("fail", message="as asked")
        assert "as asked" in str(failed.value)
        with pytest.raises(UnknownTask):
            client.run("no_such_task")
        with pytest.raises(ResultTimeout):
            client.run("sleep", seconds=5, steps=1, wait=0.5)


def test_run_resumes_a_cut_stream_on_another_api_and_returns_the_result(
    spawn_api: StartApi, spawn_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"RELAY_QUEUE_NAME": queue()}
    victim, first = spawn_api(**env)
    _, second = spawn_api(**env)
    spawn_worker(**env)
    task_id = f"run-{uuid.uuid4().hex}"

    def kill_once_running() -> None:
        wait_until(lambda: httpx.get(f"{second}/tasks/{task_id}", timeout=5).json().get("state") == "running", 20,
                   "the task running")  # fmt: skip
        # ... and an event has reached the client: before one does, the client sends its submit again (the task
        # may not exist yet), not a resume. On a loaded host the task can be running before the victim API has
        # written its first event back.
        wait_until(lambda: b'"seq":' in proxy.delivered[0], 20, "an event sent back to the client")
        proxy.target = address(second)  # the "load balancer" now sends new connections elsewhere
        victim.send(signal.SIGKILL)

    with Forwarder(address(first)) as proxy, Client(proxy.url, retry=RetryPolicy(max_wait_seconds=10)) as client:
        sender = counted(client)
        with ThreadPoolExecutor(1) as pool:
            killer = pool.submit(kill_once_running)
            assert client.run("count", id=task_id, n=40, interval=0.05) == {"count": 40, "sum": 820}
            killer.result()
    assert victim.wait(10) == -signal.SIGKILL
    assert sender.requests[0] == ("POST", "/tasks")
    assert set(sender.requests[1:]) == {("GET", f"/tasks/{task_id}/events")}  # resumed, not submitted again
    assert address(second) in proxy.connections[1:]
