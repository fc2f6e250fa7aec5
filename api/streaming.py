"""Sending a task's events over an open HTTP response, shared by ``GET .../events`` and ``POST /tasks``."""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import ParamSpec, TypeVar

from sanic import Request

from api.access import public_event
from api.errors import TooManyStreams
from api.follow import FollowOptions, RepairEnd, follow_subscribed
from api.formats import StreamFormat, encode
from api.hub import Subscription
from api.resources import Resources
from shared.enqueue import Prepared, Submitted
from shared.events import FINAL_TYPE, EventLog
from shared.waiting import raise_lost_cancel

logger = logging.getLogger("relay.api.stream")

# Another API process (or this one, a moment later) likely has room.
STREAMS_RETRY_AFTER_SECONDS = 2
# The kernel send buffer a stream's connection may fill (Linux doubles it for its bookkeeping: 512 KiB). Left to
# autotuning, a loopback or LAN socket grows to tcp_wmem's 4 MB, so a client that opens streams and never reads
# pinned that much kernel memory each; a reading client loses nothing (an event is at most 64 KiB, a result 1 MiB,
# and 512 KiB in flight is 10 MB/s even at a 50 ms round trip).
STREAM_SEND_BUFFER_BYTES = 262_144


P = ParamSpec("P")
R = TypeVar("R")


def ends_with_its_connection(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """For a route that may stream: a client that hangs up ends the connection's task, even when the
    cancel Sanic sends it is lost on the way.

    A client that closes right after a stream's last chunk (curl, a browser) is usually seen while the
    handler cleans up: Sanic's ``connection_lost`` cancels the task, and on Python 3.11 the cancel is
    lost inside redis-py's ``UNSUBSCRIBE`` write, which awaits ``asyncio.wait_for`` (CPython gh-86296;
    redis-py#2028 reports cancels lost in other commands of its asyncio client). The handler then returns
    normally, its response already complete, and Sanic's HTTP/1 loop waits for the next request on a
    connection that is gone: no data will wake it, and the keep-alive timer was stopped when the
    connection closed, so the task, its transport, request and protocol (about 9 KB) stayed for the
    life of the process (issue #26). A handler that returns its response instead is safe, by Sanic's
    code: Sanic's own write of it finds the transport closing and ends the connection. Raising the lost
    cancel here makes Sanic's loop drop the connection. Fails without:
    tests/e2e/test_stream_leaks.py::test_streams_closed_by_their_clients_leave_no_memory_behind"""

    @functools.wraps(handler)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        result = await handler(*args, **kwargs)
        if result is None:  # it streamed; a returned response is safe (above), and the check costs every submit
            raise_lost_cancel()
        return result

    return run


@contextmanager
def stream_slot(res: Resources) -> Iterator[None]:
    """Hold one of this process's ``RELAY_MAX_STREAMS`` stream slots, or refuse with 503 too_many_streams.
    Taken before anything else happens (``POST /tasks`` takes it before the enqueue, so a refused
    stream leaves no task behind) and held until the stream ends."""
    if not res.streams.try_open(res.settings.max_streams):
        res.metrics.streams_refused.inc()
        raise TooManyStreams(
            f"this API process serves {res.settings.max_streams} streams, its maximum (RELAY_MAX_STREAMS); "
            "retry shortly",
            headers={"Retry-After": str(STREAMS_RETRY_AFTER_SECONDS)},
        )
    try:
        yield
    finally:
        res.streams.closed()


def stream_headers(task_id: str, header: str = "X-Relay-Task-Id") -> dict[str, str]:
    """Headers that keep proxies from buffering a live stream."""
    return {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", header: task_id}


@dataclass(frozen=True)
class Followed:
    """What a stream follows: a task's log (ending at its ``end``) or a workflow's (ending at ``workflow_end``),
    by its stored id, shown to the caller under the id it knows (``api.access``)."""

    stored_id: str
    public_id: str
    log: EventLog
    final_type: str
    repair_end: RepairEnd
    rewrite: Callable[[bytes], bytes]
    header: str = "X-Relay-Task-Id"


def followed_task(res: Resources, task_id: str, public_id: str) -> Followed:
    """A task's stream."""

    async def repair_end() -> bool:
        return await res.transitions.repair_end(task_id)

    def rewrite(raw: bytes) -> bytes:
        return public_event(raw, task_id, public_id)

    return Followed(task_id, public_id, res.events, FINAL_TYPE, repair_end, rewrite)


def bound_send_buffer(request: Request) -> None:
    """Cap the connection's kernel send buffer at ``STREAM_SEND_BUFFER_BYTES``: what a stalled reader can pin.
    Fails without: tests/e2e/test_hostile.py::test_a_stream_that_is_never_read_pins_a_bounded_send_buffer"""
    sock = request.transport.get_extra_info("socket")
    if sock is None:  # the client has gone: the stream ends at its first write
        return
    with contextlib.suppress(OSError):  # likewise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER_BYTES)


async def send_stream(
    request: Request, res: Resources, task_id: str, after_seq: int, fmt: StreamFormat, public_id: str
) -> None:
    """Stream events after ``after_seq`` until the task's ``end`` (or a reconnect hint when draining);
    ``task_id`` is the stored id, ``public_id`` the one the caller knows the task by (``api.access``)."""
    await send_followed(request, res, followed_task(res, task_id, public_id), after_seq, fmt)


async def send_followed(request: Request, res: Resources, target: Followed, after_seq: int, fmt: StreamFormat) -> None:
    """``send_stream`` for any log (a workflow's too)."""
    with stream_slot(res):
        async with res.hub.subscribe_channel(target.log.channel(target.stored_id)) as sub:
            await _stream(request, res, sub, target, after_seq, fmt, replay_first=True)


async def submit_and_stream(
    request: Request, res: Resources, prepared: Prepared, fmt: StreamFormat, location: str, public_id: str
) -> Submitted:
    """Listen, then enqueue, then stream: a task created here needs no replay, since nothing of it can have
    been published before the stream listened. A refused submit raises before any byte is sent (a JSON error).
    The caller holds the stream slot.
    A record that names this process's inbox (``Prepared.inbox``) brings its events there: the stream listens
    with no round trip. An id submitted before keeps its first record (and its inbox, or none): its stream
    subscribes to the task's channel after the enqueue, then replays, as ``GET .../events`` does."""
    target = followed_task(res, prepared.task_id, public_id)
    extra = {"Location": location}
    if prepared.inbox is not None:
        with res.hub.follow_inbox(prepared.task_id) as sub:
            submitted = await res.enqueuer.enqueue(prepared)
            if submitted.created:
                await _stream(request, res, sub, target, 0, fmt, replay_first=False, extra=extra)
                return submitted
        async with res.hub.subscribe(prepared.task_id) as sub:
            await _stream(request, res, sub, target, 0, fmt, replay_first=True, extra=extra)
        return submitted
    async with res.hub.subscribe(prepared.task_id) as sub:
        submitted = await res.enqueuer.enqueue(prepared)
        await _stream(request, res, sub, target, 0, fmt, replay_first=not submitted.created, extra=extra)
    return submitted


async def submit_then_stream(
    request: Request,
    res: Resources,
    target: Followed,
    submit: Callable[[], Awaitable[bool]],
    fmt: StreamFormat,
    location: str,
) -> None:
    """``submit_and_stream`` for any submit (a workflow's): ``submit`` returns whether it created something new."""
    async with res.hub.subscribe_channel(target.log.channel(target.stored_id)) as sub:
        created = await submit()
        await _stream(request, res, sub, target, 0, fmt, replay_first=not created, extra={"Location": location})


async def _stream(
    request: Request,
    res: Resources,
    sub: Subscription,
    target: Followed,
    after_seq: int,
    fmt: StreamFormat,
    replay_first: bool,
    extra: dict[str, str] | None = None,
) -> None:
    stored_id, public_id = target.stored_id, target.public_id
    options = FollowOptions(res.settings.heartbeat_seconds, res.settings.api_drain_seconds)
    headers = stream_headers(public_id, target.header) | (extra or {})
    response = await request.respond(content_type=fmt.value, headers=headers)
    bound_send_buffer(request)
    logger.debug("stream of %s opened (%s, after seq %d); %d open", stored_id, fmt.name, after_seq, res.streams.count)
    frames, last = 0, "none"
    events = follow_subscribed(
        sub, target.log, stored_id, after_seq, options, target.repair_end, replay_first, target.final_type
    )
    try:
        await response.send(b"")  # flush the headers now: the first event may be minutes away
        async for frame in events:
            frame = replace(frame, raw=target.rewrite(frame.raw)) if frame.raw else frame
            await response.send(encode(frame, fmt, public_id))
            frames, last = frames + 1, frame.type or frame.kind.value
        await response.eof()
    finally:
        logger.debug("stream of %s closed after %d frames (last: %s)", stored_id, frames, last)
