"""Reading events across reconnects, against scripted responses (``httpx.MockTransport``).

The real-process versions (an API SIGKILLed or drained mid-stream) are in test_sync_e2e.py and
test_async_e2e.py; these pin down each rule on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from relay.client import AsyncClient, Client, RelayConnectionError, ResultTimeout, RetryPolicy, TaskNotFound
from relay.client.stream import Follower, Reconnect, StreamBroken


def event(seq: int, type_: str = "partial", data: Any = None) -> str:
    return json.dumps({"seq": seq, "type": type_, "task_id": "t1", "ts": 1.0, "data": data})


HEARTBEAT = '{"type":"heartbeat"}'
END = event(9, "end", {"state": "succeeded"})


class Lines(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that sends these lines, then (optionally) breaks like a dead server."""

    def __init__(self, lines: list[str], cut: bool = False) -> None:
        self.lines = lines
        self.cut = cut

    def __iter__(self) -> Iterator[bytes]:
        for line in self.lines:
            yield (line + "\n").encode()
        if self.cut:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


class Server:
    """Answers /events from a script (one entry per connection) and GET /tasks/t1 with ``state``."""

    def __init__(
        self,
        *connections: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response],
        state: str = "succeeded",
    ) -> None:
        self.connections = list(connections)
        self.state = state
        self.afters: list[int] = []
        self.state_reads = 0
        self.methods: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.methods.append(request.method)
        if not request.url.path.endswith("/events"):
            self.state_reads += 1
            return httpx.Response(200, json={"id": "t1", "task": "count", "state": self.state})
        assert request.headers["accept"] == "application/x-ndjson"
        self.afters.append(int(request.url.params["after"]))
        answer = self.connections.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, httpx.Response) else answer(request)


def stream(lines: list[str], cut: bool = False) -> httpx.Response:
    return httpx.Response(200, stream=Lines(lines, cut))


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def async_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("relay.client.sync.time.sleep", waits.append)
    monkeypatch.setattr("relay.client.aio.asyncio.sleep", async_sleep)
    return waits


def seqs(server: Server, **kwargs: Any) -> list[tuple[int, str]]:
    with Client("http://relay.test", transport=httpx.MockTransport(server), **kwargs) as relay:
        return [(e.seq, e.type) for e in relay.events("t1")]


def test_a_cut_connection_resumes_after_the_last_event_and_drops_repeats() -> None:
    server = Server(
        stream([event(1, "started"), HEARTBEAT, event(2), event(3)], cut=True),
        stream([event(2), event(3), event(4), END]),  # a replay overlapping what arrived before the cut
    )
    assert seqs(server) == [(1, "started"), (2, "partial"), (3, "partial"), (4, "partial"), (9, "end")]
    assert server.afters == [0, 3]


def test_a_stream_closed_cleanly_before_end_is_resumed_too() -> None:
    server = Server(stream([event(1, "started")]), stream([END]))
    assert seqs(server) == [(1, "started"), (9, "end")]
    assert server.afters == [0, 1]


def test_a_reconnect_frame_waits_the_servers_hint_and_spends_no_retry_budget(no_sleeping: list[float]) -> None:
    reconnect = json.dumps({"type": "reconnect", "task_id": "t1", "data": {"last_seq": 2, "retry_ms": 250}})
    server = Server(
        stream([event(1), event(2), reconnect]),
        stream([event(3), reconnect]),
        stream([END]),
    )
    assert seqs(server, retry=RetryPolicy(max_wait_seconds=0)) == [
        (1, "partial"),
        (2, "partial"),
        (3, "partial"),
        (9, "end"),
    ]
    assert server.afters == [0, 2, 3]
    assert no_sleeping == [0.25, 0.25]


def test_503_and_connection_errors_are_retried_with_retry_after_then_backoff(no_sleeping: list[float]) -> None:
    busy = {"error": {"code": "too_many_streams", "message": "busy", "details": None}}
    server = Server(
        httpx.Response(503, json=busy, headers={"Retry-After": "2"}),
        httpx.ConnectError("refused"),
        stream([event(1), END]),
    )
    assert seqs(server) == [(1, "partial"), (9, "end")]
    assert no_sleeping[0] == 2.0
    assert len(no_sleeping) == 2


def test_the_budget_bounds_consecutive_failures_and_progress_resets_it(no_sleeping: list[float]) -> None:
    cut = httpx.ReadError("reset")
    policy = RetryPolicy(max_wait_seconds=1.0, backoff_base=0.4, backoff_max=0.4)
    # Each connection makes progress before breaking, so the budget never runs out.
    server = Server(*[stream([event(n)], cut=True) for n in range(1, 8)], stream([END]))
    assert len(seqs(server, retry=policy)) == 8
    # Without progress it does, and the error says what happened.
    with pytest.raises(RelayConnectionError, match="broke"):
        seqs(Server(cut, cut, cut, cut, cut, cut, cut, cut), retry=RetryPolicy(max_wait_seconds=1.0, backoff_base=0.4))


def test_204_means_the_end_was_already_delivered() -> None:
    server = Server(httpx.Response(204))
    with Client("http://relay.test", transport=httpx.MockTransport(server)) as relay:
        assert list(relay.events("t1", after=9)) == []
    assert server.afters == [9]


def test_gap_events_are_handed_to_the_caller() -> None:
    gap = json.dumps({"seq": 5, "type": "gap", "task_id": "t1", "ts": 1.0, "data": {"first_seq": 2, "last_seq": 4}})
    assert seqs(Server(stream([event(1), gap, event(6), END]))) == [
        (1, "partial"),
        (5, "gap"),
        (6, "partial"),
        (9, "end"),
    ]


def test_an_end_of_a_run_that_was_retried_since_is_followed_into_the_next_run() -> None:
    first_end = event(3, "end", {"state": "failed"})

    def next_run(request: httpx.Request) -> httpx.Response:
        server.state = "succeeded"  # the retry's run ends while we follow it
        return stream([event(4, "requeued"), event(5, "started"), event(6, "result"), event(7, "end")])

    # The end of the failed run, then 204 (the retry has published nothing yet), then the new run.
    server = Server(stream([event(1, "started"), event(2, "error"), first_end]), httpx.Response(204), next_run)
    server.state = "queued"
    assert [seq for seq, _ in seqs(server)] == [1, 2, 3, 4, 5, 6, 7]
    assert server.afters == [0, 3, 3]
    assert server.state_reads == 3  # after each end, and after the 204

    stops_at_first_end = Server(stream([first_end]), state="queued")
    with Client("http://relay.test", transport=httpx.MockTransport(stops_at_first_end)) as relay:
        assert [e.seq for e in relay.events("t1", until_final=False)] == [3]


def test_unknown_task_raises_not_found() -> None:
    body = {"error": {"code": "task_not_found", "message": "no task", "details": {"state": "unknown"}}}
    with pytest.raises(TaskNotFound):
        seqs(Server(httpx.Response(404, json=body)))


class Heartbeats(httpx.SyncByteStream):
    """A stream that stays alive with heartbeats and never sends an event."""

    def __iter__(self) -> Iterator[bytes]:
        while True:
            time.sleep(0.01)
            yield b'{"type":"heartbeat"}\n'


def test_result_timeout_is_a_timeout_error_even_while_heartbeats_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # real sleeps: the deadline is real time
    server = Server(httpx.Response(200, stream=Heartbeats()), state="running")
    with (
        Client("http://relay.test", transport=httpx.MockTransport(server)) as relay,
        pytest.raises(ResultTimeout) as caught,
    ):
        relay.result("t1", timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.task_id == "t1"
    assert server.methods == ["GET", "GET"]  # a state read and the stream: giving up cancels nothing


def test_result_timeout_bounds_retries_of_an_unreachable_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # real sleeps: the deadline is real time
    refused = httpx.MockTransport(lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused")))
    with Client("http://relay.test", transport=refused) as relay, pytest.raises(ResultTimeout):
        relay.result("t1", timeout=0.3)  # the retry budget (30 s) is longer: the caller's deadline wins


def test_follower_rules() -> None:
    follower = Follower("t1", 2, until_final=False, policy=RetryPolicy())
    assert follower.feed("") is None
    assert follower.feed(HEARTBEAT) is None
    assert follower.feed(event(2)) is None  # not above where we resumed
    assert follower.feed(event(3)) is not None
    assert follower.params() == {"after": 3}
    assert follower.feed('{"type":"reconnect","data":{"retry_ms":1500}}') == Reconnect(1.5)
    for garbage in ("<html>", "[1]", '{"seq": "x", "type": "partial"}', '{"no": "type"}'):
        with pytest.raises(StreamBroken):
            follower.feed(garbage)


async def test_async_client_resumes_the_same_way(no_sleeping: list[float]) -> None:
    server = Server(
        stream([event(1, "started"), event(2)], cut=True),
        httpx.ConnectError("refused"),
        stream([event(2), event(3), END]),
    )
    async with AsyncClient("http://relay.test", transport=httpx.MockTransport(server)) as relay:
        got = [(e.seq, e.type) async for e in relay.events("t1")]
    assert got == [(1, "started"), (2, "partial"), (3, "partial"), (9, "end")]
    assert server.afters == [0, 2, 2]


@pytest.fixture
def steady_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each backoff its cap (no jitter), so the budget a test spends is known."""
    monkeypatch.setattr("relay.client.retry.random.random", lambda: 0.999)


# The CLI's: a wrong address is told within a moment, an API that has answered gets the whole budget.
FIRST_CONTACT = RetryPolicy(max_wait_seconds=30, backoff_base=0.05, backoff_max=0.2, first_contact_wait_seconds=0.3)


def answered_then_restarting() -> Server:
    """The first request of the client is the stream: answered (200, cut before its first heartbeat), then the
    API restarts (refused for longer than the first-contact budget, well within the whole one), then the end."""
    return Server(stream([]), *[httpx.ConnectError("refused")] * 6, stream([event(1), END]))


@pytest.mark.usefixtures("steady_jitter")
def test_a_stream_the_api_answered_gets_the_whole_budget_not_the_first_contact_one() -> None:
    assert seqs(answered_then_restarting(), retry=FIRST_CONTACT) == [(1, "partial"), (9, "end")]


@pytest.mark.usefixtures("steady_jitter")
async def test_async_a_stream_the_api_answered_gets_the_whole_budget_not_the_first_contact_one() -> None:
    server = answered_then_restarting()
    async with AsyncClient("http://relay.test", retry=FIRST_CONTACT, transport=httpx.MockTransport(server)) as relay:
        assert [(e.seq, e.type) async for e in relay.events("t1")] == [(1, "partial"), (9, "end")]


@pytest.mark.usefixtures("steady_jitter")
def test_heartbeats_reset_the_budget_so_short_outages_do_not_add_up(no_sleeping: list[float]) -> None:
    """A long-deferred task's stream brings only heartbeats; the API restarts six times, each outage within the
    budget (two 0.5 s waits of 2 s), all of them together past it."""
    policy = RetryPolicy(max_wait_seconds=2.0, backoff_base=0.5, backoff_max=0.5)
    outages = [conn for _ in range(6) for conn in (stream([HEARTBEAT]), httpx.ConnectError("refused"))]
    assert seqs(Server(*outages, stream([END])), retry=policy) == [(9, "end")]
    assert sum(no_sleeping) > policy.max_wait_seconds


def test_a_bare_200_closed_at_once_is_not_progress() -> None:
    """A proxy that answers and closes at once, forever, must not be retried forever."""
    with pytest.raises(RelayConnectionError, match="closed before"):
        seqs(Server(*[stream([]) for _ in range(50)]), retry=RetryPolicy(max_wait_seconds=1.0, backoff_base=0.4))
