"""Wire formats for event streams: NDJSON (one JSON object per line) and Server-Sent Events."""

from __future__ import annotations

import time
from enum import Enum

from api.follow import Frame, FrameKind
from shared.serialization import dumps

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
RECONNECT_RETRY_MS = 1000


class StreamFormat(Enum):
    """The two formats a stream can be sent in."""

    NDJSON = NDJSON
    SSE = SSE


def negotiate(accept: str) -> StreamFormat | None:
    """SSE when asked for ``text/event-stream``, NDJSON for ``application/x-ndjson``/``application/json``
    (or ``*/*``); None when the client accepts neither."""
    accept = accept.lower()
    if SSE in accept:
        return StreamFormat.SSE
    if not accept or any(t in accept for t in (NDJSON, "application/json", "*/*", "application/*")):
        return StreamFormat.NDJSON
    return None


def wants_stream(accept: str) -> StreamFormat | None:
    """For ``POST /tasks``: stream only when the client explicitly asks for a stream type."""
    accept = accept.lower()
    if SSE in accept:
        return StreamFormat.SSE
    if NDJSON in accept:
        return StreamFormat.NDJSON
    return None


def encode(frame: Frame, fmt: StreamFormat, task_id: str) -> bytes:
    """One frame in the chosen format."""
    if fmt is StreamFormat.SSE:
        return _sse(frame, task_id)
    if frame.kind is FrameKind.EVENT:
        return frame.raw + b"\n"
    if frame.kind is FrameKind.HEARTBEAT:
        return b'{"type":"heartbeat"}\n'
    return _reconnect_json(frame, task_id) + b"\n"


def _reconnect_json(frame: Frame, task_id: str) -> bytes:
    """Shaped like an event (type, task_id, ts, data) but without a seq: it is not stored in the log."""
    data = {"last_seq": frame.seq, "retry_ms": RECONNECT_RETRY_MS}
    return dumps({"type": "reconnect", "task_id": task_id, "ts": round(time.time(), 6), "data": data})


def _sse(frame: Frame, task_id: str) -> bytes:
    if frame.kind is FrameKind.EVENT:
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (frame.seq, frame.type.encode(), frame.raw)
    if frame.kind is FrameKind.HEARTBEAT:
        return b": heartbeat\n\n"
    return b"retry: %d\nevent: reconnect\ndata: %s\n\n" % (RECONNECT_RETRY_MS, _reconnect_json(frame, task_id))
