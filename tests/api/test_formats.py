"""Stream wire formats and content negotiation."""

from __future__ import annotations

import json
import time

import pytest

from api.follow import Frame, FrameKind
from api.formats import StreamFormat, encode, negotiate, wants_stream

EVENT = Frame(FrameKind.EVENT, 7, "progress", b'{"seq":7,"type":"progress"}')


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("", StreamFormat.NDJSON),
        ("*/*", StreamFormat.NDJSON),
        ("application/x-ndjson", StreamFormat.NDJSON),
        ("application/json", StreamFormat.NDJSON),
        ("text/event-stream", StreamFormat.SSE),
        ("text/html", None),
    ],
)
def test_negotiate(accept: str, fmt: StreamFormat | None) -> None:
    assert negotiate(accept) is fmt


def test_post_streams_only_when_asked() -> None:
    assert wants_stream("application/json") is None
    assert wants_stream("*/*") is None
    assert wants_stream("text/event-stream") is StreamFormat.SSE
    assert wants_stream("application/x-ndjson") is StreamFormat.NDJSON


def test_ndjson_frames() -> None:
    assert encode(EVENT, StreamFormat.NDJSON, "t1") == b'{"seq":7,"type":"progress"}\n'
    assert encode(Frame(FrameKind.HEARTBEAT), StreamFormat.NDJSON, "t1") == b'{"type":"heartbeat"}\n'


def test_reconnect_frame_is_shaped_like_an_event_without_seq() -> None:
    before = time.time()
    frame = encode(Frame(FrameKind.RECONNECT, 7), StreamFormat.NDJSON, "t1")
    assert frame.endswith(b"\n")
    body = json.loads(frame)
    assert body.pop("ts") >= round(before, 6)
    assert body == {"type": "reconnect", "task_id": "t1", "data": {"last_seq": 7, "retry_ms": 1000}}
    sse = encode(Frame(FrameKind.RECONNECT, 7), StreamFormat.SSE, "t1")
    assert json.loads(sse.split(b"data: ", 1)[1])["ts"] >= round(before, 6)


def test_sse_frames_carry_ids_for_last_event_id() -> None:
    assert encode(EVENT, StreamFormat.SSE, "t1") == b'id: 7\nevent: progress\ndata: {"seq":7,"type":"progress"}\n\n'
    assert encode(Frame(FrameKind.HEARTBEAT), StreamFormat.SSE, "t1") == b": heartbeat\n\n"
    reconnect = encode(Frame(FrameKind.RECONNECT, 7), StreamFormat.SSE, "t1")
    assert reconnect.startswith(b"retry: 1000\nevent: reconnect\ndata: {")
