"""What the client sends and how it retries, against ``httpx.MockTransport`` (no server needed).

The routes the core is adding (``GET /tasks``, ``POST /tasks/{id}/retry``) are covered here by their
requests; their end-to-end tests are in test_sync_e2e.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from relay.client import (
    AsyncClient,
    Client,
    NotRelayAnswer,
    NotRetryable,
    QueueFull,
    RelayConnectionError,
    RetryPolicy,
    ServerError,
    StoreUnavailable,
    TaskNotFound,
    UnauthorizedError,
)

Handler = Callable[[httpx.Request], httpx.Response]


def view(task_id: str, state: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "task": "echo", "state": state, "tries": 1, "arguments": {}, "result": None} | extra


def accepted(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(202, json={"id": body["id"], "task": body["task"], "state": "queued", "created": True})


class Recorder:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self, *answers: httpx.Response | Handler | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Waits the client would have slept (it does not, here)."""
    waits: list[float] = []
    monkeypatch.setattr("relay.client.sync.time.sleep", waits.append)
    return waits


def client(recorder: Recorder, **kwargs: Any) -> Client:
    return Client("http://relay.test", transport=httpx.MockTransport(recorder), **kwargs)


def test_submit_sends_task_arguments_and_options() -> None:
    rec = Recorder(accepted)
    run_at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with client(rec) as relay:
        relay.submit("resize", "a.png", 2, width=800, delay=dt.timedelta(seconds=90), timeout=30, max_retries=1)
        relay.submit("resize", id="mine-1", run_at=run_at)
    first, second = rec.bodies()
    assert first["task"] == "resize"
    assert first["args"] == ["a.png", 2]
    assert first["kwargs"] == {"width": 800}
    assert first["delay_seconds"] == 90
    assert first["timeout_seconds"] == 30
    assert first["max_retries"] == 1
    assert len(first["id"]) == 32  # the client names it, so a resent submit cannot run twice
    assert "run_at" not in first
    assert second == {"task": "resize", "args": [], "kwargs": {}, "id": "mine-1", "run_at": "2030-01-02T03:04:05+00:00"}
    assert rec.requests[0].url == "http://relay.test/tasks"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": 5, "run_at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}, "not both"),
        ({"run_at": dt.datetime(2030, 1, 1)}, "timezone"),
        ({"delay": -1}, "negative"),
    ],
)
def test_submit_rejects_impossible_options_before_sending(options: dict[str, Any], message: str) -> None:
    rec = Recorder(accepted)
    with client(rec) as relay, pytest.raises(ValueError, match=message):
        relay.submit("echo", **options)
    assert rec.requests == []


def test_submit_sends_queue_and_priority_only_when_given() -> None:
    rec = Recorder(accepted)
    with client(rec) as relay:
        relay.submit("resize", "a.png", queue="gpu-spot", priority=7)
        relay.submit("resize", priority=0)  # the lowest is still sent: it was asked for
        relay.submit("resize")
    first, lowest, plain = rec.bodies()
    assert (first["queue"], first["priority"], first["args"]) == ("gpu-spot", 7, ["a.png"])
    assert lowest["priority"] == 0
    assert "queue" not in lowest
    assert "queue" not in plain  # the task's own queue and priority apply
    assert "priority" not in plain


@pytest.mark.parametrize("priority", [-1, 10, 2.5, "5", True])
def test_a_priority_outside_0_to_9_is_refused_before_sending(priority: Any) -> None:
    rec = Recorder(accepted)
    with client(rec) as relay, pytest.raises(ValueError, match=r"priority must be an integer 0\.\.9 .*got "):
        relay.submit("echo", priority=priority)
    assert rec.requests == []


@pytest.mark.parametrize("queue", ["", 3])
def test_a_queue_that_is_no_name_is_refused_before_sending(queue: Any) -> None:
    rec = Recorder(accepted)
    with client(rec) as relay, pytest.raises(ValueError, match="queue must be a queue's name"):
        relay.submit("echo", queue=queue)
    assert rec.requests == []


def test_a_task_argument_named_queue_or_priority_goes_through_submit_with() -> None:
    rec = Recorder(accepted)
    with client(rec) as relay:
        relay.submit_with("route", [], {"queue": "orders", "priority": "high"})
    (body,) = rec.bodies()
    assert body["kwargs"] == {"queue": "orders", "priority": "high"}
    assert "queue" not in body
    assert "priority" not in body


def test_a_view_shows_its_queue_and_priority_and_none_from_an_older_api() -> None:
    waiting = "concurrency limit full: 3 running for customer_id=42"
    answers = [
        httpx.Response(200, json=view("t1", "queued", queue="gpu", priority=5, waiting_reason=waiting)),
        httpx.Response(200, json=view("t2")),
    ]
    with client(Recorder(*answers)) as relay:
        new, old = relay.get("t1"), relay.get("t2")
    assert (new.queue, new.priority, new.waiting_reason) == ("gpu", 5, waiting)
    assert (old.queue, old.priority) == (None, None)


def test_a_task_argument_named_like_an_option_goes_through_submit_with() -> None:
    rec = Recorder(accepted)
    with client(rec) as relay:
        relay.submit_with("fetch", [], {"timeout": 3, "id": 7})
        relay.task("fetch").delay(timeout=3)  # Celery's delay: every keyword is the task's
    assert [b["kwargs"] for b in rec.bodies()] == [{"timeout": 3, "id": 7}, {"timeout": 3}]
    assert all("timeout_seconds" not in b for b in rec.bodies())


def test_apply_async_maps_celery_options() -> None:
    rec = Recorder(accepted)
    eta = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    with client(rec) as relay:
        handle = relay.task("resize").apply_async(
            args=["x.png"], kwargs={"width": 10}, task_id="celery-1", countdown=5, time_limit=60
        )
        relay.task("resize").apply_async(eta=eta, max_retries=0, queue="gpu", priority=9)
    first, second = rec.bodies()
    assert handle.id == "celery-1"
    assert first == {
        "task": "resize",
        "args": ["x.png"],
        "kwargs": {"width": 10},
        "id": "celery-1",
        "delay_seconds": 5,
        "timeout_seconds": 60,
    }
    assert second["run_at"] == "2030-01-01T12:00:00+00:00"
    assert second["max_retries"] == 0
    assert (second["queue"], second["priority"]) == ("gpu", 9)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"expires": 60}, TypeError, "'expires' is not supported by Relay: Relay tasks do not expire"),
        ({"routing_key": "high"}, TypeError, "'routing_key' is not supported by Relay: .* use queue="),
        ({"link": object()}, TypeError, "no callbacks"),
        ({"frobnicate": 1}, TypeError, "'frobnicate' is not supported"),
        ({"countdown": 1, "eta": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}, ValueError, "countdown or eta"),
        ({"eta": dt.datetime(2030, 1, 1)}, ValueError, "eta needs a timezone"),
    ],
)
def test_apply_async_refuses_what_relay_cannot_do(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    rec = Recorder(accepted)
    with client(rec) as relay, pytest.raises(error, match=message):
        relay.task("resize").apply_async(**options)
    assert rec.requests == []


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_URL", "http://from-env.test:9000/")
    monkeypatch.setenv("RELAY_API_KEY", "s3cret")
    rec = Recorder(httpx.Response(200, json=view("t1")))
    with Client(transport=httpx.MockTransport(rec)) as relay:
        relay.get("t1")
    assert str(rec.requests[0].url) == "http://from-env.test:9000/tasks/t1"
    assert rec.requests[0].headers["authorization"] == "Bearer s3cret"
    with Client("http://arg.test", api_key="other", transport=httpx.MockTransport(rec)) as relay:
        relay.get("t1")
    assert str(rec.requests[1].url) == "http://arg.test/tasks/t1"
    assert rec.requests[1].headers["authorization"] == "Bearer other"


def test_no_key_sends_no_authorization_and_401_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_API_KEY", raising=False)
    body = {"error": {"code": "unauthorized", "message": "an API key is required", "details": None}}
    rec = Recorder(httpx.Response(401, json=body))
    with client(rec) as relay, pytest.raises(UnauthorizedError):
        relay.get("t1")
    assert "authorization" not in rec.requests[0].headers


def page(ids: list[str], cursor: str | None) -> httpx.Response:
    return httpx.Response(200, json={"tasks": [view(i, "failed") for i in ids], "next_cursor": cursor})


def test_list_pages_lazily_with_the_cursor() -> None:
    rec = Recorder(page(["a", "b"], "c1"), page(["c", "d"], "c2"), page(["e"], None))
    with client(rec) as relay:
        tasks = relay.list(state="failed", task="resize", page_size=2)
        assert rec.requests == []  # nothing is fetched until iterated
        assert [t.id for t in tasks] == ["a", "b", "c", "d", "e"]
    params = [dict(r.url.params) for r in rec.requests]
    assert params == [
        {"state": "failed", "task": "resize", "limit": "2"},
        {"state": "failed", "task": "resize", "limit": "2", "cursor": "c1"},
        {"state": "failed", "task": "resize", "limit": "2", "cursor": "c2"},
    ]
    assert all(r.url.path == "/tasks" and r.method == "GET" for r in rec.requests)


def test_list_limit_stops_fetching_and_asks_for_no_more_than_needed() -> None:
    rec = Recorder(page(["a", "b", "c"], "c1"), page(["d", "e"], "c2"))
    with client(rec) as relay:
        assert [t.id for t in relay.list(limit=5, page_size=3)] == ["a", "b", "c", "d", "e"]
    assert [r.url.params["limit"] for r in rec.requests] == ["3", "2"]
    with pytest.raises(ValueError, match="page_size"):
        next(iter(client(rec).list(page_size=501)))


def test_list_follows_the_cursor_past_an_empty_page() -> None:
    # The server's scan of one request may match nothing and still give a cursor: the older tasks come next.
    rec = Recorder(page([], "c1"), page(["old"], None))
    with client(rec) as relay:
        assert [t.id for t in relay.list(state="failed")] == ["old"]
    assert [r.url.params.get("cursor") for r in rec.requests] == [None, "c1"]


async def test_async_list_follows_the_cursor_past_an_empty_page() -> None:
    rec = Recorder(page([], "c1"), page(["old"], None))
    async with AsyncClient("http://relay.test", transport=httpx.MockTransport(rec)) as relay:
        assert [t.id async for t in relay.list(state="failed")] == ["old"]
    assert [r.url.params.get("cursor") for r in rec.requests] == [None, "c1"]


def test_retry_posts_and_returns_a_handle_on_the_same_id() -> None:
    answer = {"id": "t 1", "task": "echo", "state": "queued", "created": False}
    rec = Recorder(httpx.Response(202, json=answer))
    with client(rec) as relay:
        handle = relay.task_handle("t 1").retry()
    assert (rec.requests[0].method, rec.requests[0].url.raw_path) == ("POST", b"/tasks/t%201/retry")
    assert handle.id == "t 1"
    assert handle.submitted is not None
    assert handle.submitted.state == "queued"


def test_retry_of_a_running_task_is_not_retryable() -> None:
    body = {"error": {"code": "not_retryable", "message": "it has not ended", "details": None}}
    with client(Recorder(httpx.Response(409, json=body))) as relay, pytest.raises(NotRetryable) as caught:
        relay.retry("t1")
    assert caught.value.status == 409


def test_cancel_sends_delete() -> None:
    rec = Recorder(httpx.Response(202, json={"id": "t1", "state": "aborting"}))
    with client(rec) as relay:
        assert relay.task_handle("t1").cancel() == "aborting"
    assert rec.requests[0].method == "DELETE"


def queue_full(retry_after: str | None = "5") -> httpx.Response:
    body = {"error": {"code": "queue_full", "message": "the queue is full", "details": None}}
    return httpx.Response(503, json=body, headers={"Retry-After": retry_after} if retry_after else {})


def test_503_is_retried_after_retry_after_with_the_same_id(slept: list[float]) -> None:
    rec = Recorder(queue_full("5"), queue_full("2"), accepted)
    with client(rec) as relay:
        handle = relay.submit("echo")
    assert slept == [5.0, 2.0]
    ids = {b["id"] for b in rec.bodies()}
    assert ids == {handle.id}  # the same submit each time: at most one task can result


def test_retry_gives_up_when_retry_after_exceeds_the_budget(slept: list[float]) -> None:
    rec = Recorder(queue_full("2"), queue_full("5"), accepted)
    with client(rec, retry=RetryPolicy(max_wait_seconds=6)) as relay, pytest.raises(QueueFull) as caught:
        relay.submit("echo")
    assert slept == [2.0]  # 2 + 5 would exceed 6: it raises at once instead of sleeping
    assert caught.value.retry_after == 5.0
    assert len(rec.requests) == 2


def test_without_retry_after_backoff_grows_with_jitter_within_the_cap(
    slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.client.retry.random.random", lambda: 0.999)
    rec = Recorder(*([queue_full(None)] * 6), accepted)
    with client(rec, retry=RetryPolicy(max_wait_seconds=60, backoff_base=0.5, backoff_max=3)) as relay:
        relay.submit("echo")
    assert slept == pytest.approx([0.4995, 0.999, 1.998, 2.997, 2.997, 2.997])


def test_retry_can_be_turned_off(slept: list[float]) -> None:
    rec = Recorder(queue_full("1"), accepted)
    with client(rec, retry=RetryPolicy(max_wait_seconds=0)) as relay, pytest.raises(QueueFull):
        relay.submit("echo")
    assert slept == []


def test_connection_errors_are_retried_then_raised(slept: list[float]) -> None:
    rec = Recorder(httpx.ConnectError("refused"), httpx.ReadError("reset"), accepted)
    with client(rec) as relay:
        relay.submit("echo")  # a submit carries its id: resending after a lost answer is safe
    assert len(slept) == 2
    rec = Recorder(httpx.ConnectError("refused"))
    with client(rec, retry=RetryPolicy(max_wait_seconds=1)) as relay, pytest.raises(RelayConnectionError) as caught:
        relay.get("t1")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.retryable


def test_a_cancel_whose_answer_was_lost_is_not_resent(slept: list[float]) -> None:
    rec = Recorder(httpx.ReadError("reset after sending"), httpx.Response(200, json={"state": "aborted"}))
    with client(rec) as relay, pytest.raises(RelayConnectionError):
        relay.cancel("t1")
    assert len(rec.requests) == 1
    rec = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json={"state": "aborted"}))
    with client(rec) as relay:
        assert relay.cancel("t1") == "aborted"  # never sent: safe to send
    assert len(rec.requests) == 2


def api_error(status: int, code: str, retry_after: str = "1") -> httpx.Response:
    body = {"error": {"code": code, "message": f"the {code} message", "details": None}}
    return httpx.Response(status, json=body, headers={"Retry-After": retry_after})


def proxy_page(status: int) -> Handler:
    """A proxy's own answer (HTML, not the API's JSON error), a new response for each request."""
    return lambda request: httpx.Response(status, text=f"<html>{status} from the proxy</html>")


CANCELS_AND_RETRIES: list[Callable[[Client], Any]] = [
    lambda relay: relay.cancel("t1"),
    lambda relay: relay.retry("t1"),
    lambda relay: relay.cancel_workflow("wf1"),
    lambda relay: relay.retry_workflow("wf1"),
]


@pytest.mark.parametrize("status", [502, 504])
@pytest.mark.parametrize("call", CANCELS_AND_RETRIES, ids=["cancel", "retry", "cancel_workflow", "retry_workflow"])
def test_a_cancel_or_retry_a_proxy_answered_502_or_504_is_not_resent(
    slept: list[float], call: Callable[[Client], Any], status: int
) -> None:
    """The proxy's 502/504 is an answer lost on the way back: the API may have carried the request out."""
    rec = Recorder(proxy_page(status), httpx.Response(202, json={"id": "t1", "state": "aborting", "created": False}))
    with client(rec) as relay, pytest.raises(ServerError) as caught:
        call(relay)
    assert caught.value.status == status
    assert len(rec.requests) == 1
    assert slept == []


@pytest.mark.parametrize(
    "refusal",
    [api_error(503, "draining"), api_error(429, "rate_limited"), api_error(429, "quota_exceeded")],
    ids=["draining", "rate_limited", "quota_exceeded"],
)
def test_a_retry_the_api_refused_before_acting_is_resent(slept: list[float], refusal: httpx.Response) -> None:
    rec = Recorder(refusal, httpx.Response(202, json={"id": "t1", "task": "echo", "state": "queued", "created": False}))
    with client(rec) as relay:
        relay.retry("t1")
    assert len(rec.requests) == 2
    assert slept == [1.0]


def test_a_cancel_the_store_failed_is_not_resent(slept: list[float]) -> None:
    """A redis_* 503 may come after the task was aborted (reading it back): not resent."""
    rec = Recorder(api_error(503, "redis_unavailable"), httpx.Response(200, json={"state": "aborted"}))
    with client(rec) as relay, pytest.raises(StoreUnavailable):
        relay.cancel("t1")
    assert len(rec.requests) == 1


def test_a_read_a_proxy_answered_504_is_still_retried(slept: list[float]) -> None:
    rec = Recorder(proxy_page(504), httpx.Response(200, json=view("t1")))
    with client(rec) as relay:
        assert relay.get("t1").state == "succeeded"
    assert len(rec.requests) == 2


async def test_async_a_cancel_or_retry_a_proxy_answered_504_is_not_resent(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("relay.client.aio.asyncio.sleep", sleep)
    rec = Recorder(proxy_page(504))
    async with AsyncClient("http://relay.test", transport=httpx.MockTransport(rec)) as relay:
        for call, target in ((relay.cancel, "t1"), (relay.retry, "t1"), (relay.cancel_workflow, "wf1")):
            with pytest.raises(ServerError):
                await call(target)
        with pytest.raises(ServerError):
            await relay.retry_workflow("wf1")
    assert len(rec.requests) == 4
    assert slept == []


@pytest.mark.parametrize(
    "page",
    [httpx.Response(200, text="<html>Sign in</html>"), httpx.Response(200, json=["not", "an", "object"])],
    ids=["html", "json-list"],
)
def test_a_success_that_is_not_relays_json_is_a_relay_error(slept: list[float], page: httpx.Response) -> None:
    with client(Recorder(page)) as relay, pytest.raises(NotRelayAnswer) as caught:
        relay.cancel("t1")
    assert isinstance(caught.value, RelayConnectionError)  # Relay's API was not reached: something else answered
    assert caught.value.status == 200
    assert slept == []


async def test_async_a_success_that_is_not_relays_json_is_a_relay_error() -> None:
    rec = Recorder(lambda request: httpx.Response(200, text="<html>Sign in</html>"))
    async with AsyncClient("http://relay.test", transport=httpx.MockTransport(rec)) as relay:
        with pytest.raises(NotRelayAnswer, match="Sign in"):
            await relay.get("t1")


def test_not_found_is_not_retried(slept: list[float]) -> None:
    body = {"error": {"code": "task_not_found", "message": "no task", "details": {"state": "unknown"}}}
    rec = Recorder(httpx.Response(404, json=body))
    with client(rec) as relay, pytest.raises(TaskNotFound) as caught:
        relay.get("nope")
    assert caught.value.details == {"state": "unknown"}
    assert slept == []
    assert len(rec.requests) == 1


async def test_async_client_builds_the_same_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("relay.client.aio.asyncio.sleep", fake_sleep)
    rec = Recorder(queue_full("3"), accepted, accepted, page(["a"], "c1"), page(["b"], None))
    async with AsyncClient("http://relay.test", transport=httpx.MockTransport(rec)) as relay:
        handle = await relay.task("resize").apply_async(kwargs={"w": 1}, countdown=2)
        await relay.submit("resize", queue="gpu", priority=3)
        listed = [t.id async for t in relay.list(state="failed", page_size=1)]
    assert waits == [3.0]
    assert rec.bodies()[1] == rec.bodies()[0]
    assert rec.bodies()[0]["delay_seconds"] == 2
    assert handle.id == rec.bodies()[0]["id"]
    assert (rec.bodies()[2]["queue"], rec.bodies()[2]["priority"]) == ("gpu", 3)
    assert listed == ["a", "b"]
    assert dict(rec.requests[4].url.params) == {"state": "failed", "limit": "1", "cursor": "c1"}


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://relay.test", "http://", "relay.test"])
def test_a_url_no_retry_can_fix_is_refused_at_once(url: str) -> None:
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        Client(url)
    with pytest.raises(ValueError, match=r"did you mean 'http://localhost:8000'\?"):
        Client("localhost:8000")


def test_an_unsupported_protocol_is_not_retried(slept: list[float]) -> None:
    rec = Recorder(httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."))
    with client(rec) as relay, pytest.raises(RelayConnectionError) as caught:
        relay.get("t1")
    assert (slept, len(rec.requests), caught.value.retryable) == ([], 1, False)


def test_each_retry_is_logged_as_a_warning(slept: list[float], caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(httpx.ConnectError("refused"), queue_full("1"), accepted)
    with caplog.at_level(logging.WARNING, logger="relay.client"), client(rec) as relay:
        relay.submit("echo")
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.client" and r.levelno == logging.WARNING]
    assert len(lines) == 2
    assert lines[0].startswith("connection_error: cannot talk to http://relay.test: ConnectError: refused; retry 1 in")
    assert lines[1].startswith("503 queue_full: ")
    assert "; retry 2 in 1.0s" in lines[1]


def test_first_contact_wait_bounds_only_connection_failures_before_any_answer(
    slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.client.retry.random.random", lambda: 0.999)
    policy = RetryPolicy(max_wait_seconds=60, first_contact_wait_seconds=1)
    rec = Recorder(httpx.ConnectError("refused"))
    with client(rec, retry=policy) as relay, pytest.raises(RelayConnectionError):
        relay.get("t1")
    assert 0 < sum(slept) <= 1  # never answered: a second of retries, not a minute
    slept.clear()
    answer = httpx.Response(200, json=view("t1"))
    rec = Recorder(answer, *([httpx.ConnectError("refused")] * 5), answer)
    with client(rec, retry=policy) as relay:
        relay.get("t1")
        relay.get("t1")  # the API answered once: a restart is waited out with the whole budget
    assert len(slept) == 5
    assert sum(slept) > 1
