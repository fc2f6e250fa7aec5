"""What a stream leaves behind once its client has gone: nothing. Real processes, raw sockets.

Issue #26: every stream whose client closed its socket right after the final chunk (curl, browsers) kept
about 9 KB in the API for good; and a client leaving mid-stream while its stream read Redis left the stream
running until its next heartbeat. Each kind below opens 3,000 streams after a warm-up, then checks the API's
lost connections still held and live objects by type (``tests/support/heap_app.py``), its Python blocks and
its resident memory. The RSS bound is 3 MiB for 3,000 streams (1 KiB a stream): before the fix the three
failing kinds grew by 17.4-24.1 MiB here (1,900-2,650 connections held), and with it fixed RSS moved by at
most 0.6 MiB in these runs (allocator noise). Lost connections and blocks are exact: each leaked connection
kept its task, ``HttpProtocol``, transport and ``Request``, some hundred blocks."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from bench.harness.client import submit_ok, wait_state
from tests.conftest import StartApi, StartWorker
from tests.support.heap import HEAP_FACTORY, Heap, settled
from tests.support.heavy import heavy

WARM_UP = 300
STREAMS = 3000
MAX_RSS_GROWTH_KIB = 3 * 1024
# One block a stream: a leaked connection holds some hundred (its task, protocol, transport, request, headers,
# ...); with nothing leaked the count moved by less than 200 over 3,000 streams in these runs.
MAX_BLOCK_GROWTH = STREAMS
FINAL_CHUNK = b"0\r\n\r\n"
NDJSON, SSE = "application/x-ndjson", "text/event-stream"


def raw_request(port: int, head: str, body: bytes = b"") -> bytes:
    """A request: ``head`` (its request line and headers) and ``body``, which only a POST has."""
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{head}Host: 127.0.0.1:{port}\r\n{length}\r\n".encode() + body


def exchange(port: int, request: bytes, done: Callable[[bytes], bool]) -> bytes:
    """Send ``request`` on a new connection, read until ``done``, then close the socket at once (as curl does
    after a stream's final chunk), without reading or waiting for anything more."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while not done(received):
            data = sock.recv(65536)
            if not data:
                raise AssertionError(f"the API closed the connection first: {received[-300:]!r}")
            received += data
    return received


def at_final_chunk(received: bytes) -> bool:
    return received.endswith(FINAL_CHUNK)


def at_headers(received: bytes) -> bool:
    """Mid-stream: the stream is open (its headers are flushed before the first event) and goes on."""
    return b"\r\n\r\n" in received


def whole_response(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    return len(body) >= length


def submit_request(port: int, accept: str, body: dict[str, object]) -> bytes:
    head = f"POST /tasks HTTP/1.1\r\nAccept: {accept}\r\nContent-Type: application/json\r\n"
    return raw_request(port, head, json.dumps(body).encode())


def follow_request(port: int, accept: str, task_id: str) -> bytes:
    return raw_request(port, f"GET /tasks/{task_id}/events HTTP/1.1\r\nAccept: {accept}\r\n")


@dataclass(frozen=True)
class Kind:
    """One way a stream ends, repeated: ``open_one(port, task_id)`` runs one stream to its end."""

    name: str
    open_one: Callable[[int, str], None]
    needs_worker: bool = False
    follows_an_ended_task: bool = False
    holds_the_only_slot: bool = False
    env: dict[str, str] = field(default_factory=dict)


def submit_to_the_end(port: int, _: str) -> None:
    received = exchange(port, submit_request(port, NDJSON, {"task": "echo", "kwargs": {}}), at_final_chunk)
    assert b'"type":"end"' in received, received[-300:]


def follow_to_the_end(port: int, ended_task: str) -> None:
    received = exchange(port, follow_request(port, SSE, ended_task), at_final_chunk)
    assert b"event: end" in received, received[-300:]


def submit_then_leave(port: int, _: str) -> None:
    later = {"task": "echo", "delay_seconds": 3600}
    received = exchange(port, submit_request(port, SSE, later), at_headers)
    assert received.startswith(b"HTTP/1.1 200"), received[:300]


def follow_then_leave(port: int, waiting_task: str) -> None:
    received = exchange(port, follow_request(port, NDJSON, waiting_task), at_headers)
    assert received.startswith(b"HTTP/1.1 200"), received[:300]


def refused_at_the_cap(port: int, _: str) -> None:
    received = exchange(port, submit_request(port, NDJSON, {"task": "echo"}), whole_response)
    assert received.startswith(b"HTTP/1.1 503"), received[:300]
    assert b"too_many_streams" in received, received[:300]


KINDS = [
    Kind("submit NDJSON, closed after the final chunk", submit_to_the_end, needs_worker=True),
    Kind("follow SSE, closed after the final chunk", follow_to_the_end, follows_an_ended_task=True),
    Kind("submit SSE, closed mid-stream", submit_then_leave),
    Kind("follow NDJSON, closed mid-stream", follow_then_leave),
    Kind(
        "submit refused at the stream cap", refused_at_the_cap, holds_the_only_slot=True, env={"RELAY_MAX_STREAMS": "1"}
    ),
]


@heavy
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_streams_closed_by_their_clients_leave_no_memory_behind(
    kind: Kind, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """The default heartbeat (15 s) on purpose: a stream that outlives its client until its next heartbeat
    write fails still holds its connection when the test looks, 10 s later at most."""
    queue = f"relay:streamleaks:{uuid.uuid4().hex[:8]}"
    if kind.needs_worker:
        spawn_worker(RELAY_QUEUE_NAME=queue)
    api, base = spawn_api(factory=HEAP_FACTORY, RELAY_QUEUE_NAME=queue, **kind.env)
    port = int(base.rsplit(":", 1)[1])
    task_id = submit_ok(base, {"task": "echo", "delay_seconds": 3600})  # it waits: a stream of it stays open
    with contextlib.ExitStack() as stack:
        if kind.follows_an_ended_task:
            spawn_worker(RELAY_QUEUE_NAME=queue)
            task_id = submit_ok(base, {"task": "echo", "kwargs": {"message": "x"}})
            wait_state(base, task_id, {"succeeded"})
        if kind.holds_the_only_slot:
            held = stack.enter_context(httpx.stream("GET", f"{base}/tasks/{task_id}/events", timeout=60))
            assert held.status_code == 200
        for _ in range(WARM_UP):
            kind.open_one(port, task_id)
        before = settled(api.pid, base)
        for _ in range(STREAMS):
            kind.open_one(port, task_id)
        after = settled(api.pid, base, before.connections)
    summary = f"{kind.name}: {Heap.change(before, after)}"
    print(summary)
    assert after.lost_connections == 0, summary
    assert after.blocks - before.blocks <= MAX_BLOCK_GROWTH, summary
    assert after.rss_kib - before.rss_kib <= MAX_RSS_GROWTH_KIB, summary
