"""Task events: their schema, how they are encoded, and how a task's log is read back.

Events are written only by Relay's Lua scripts (``shared/lua/``), each in the same step as the state change
they report: a client that sees ``end`` and then reads the task finds its final state. A task's events get
sequence numbers from a counter of their own (``relay:seq:<id>`` while the task lives, the head of its result
record once it ended), so numbering never restarts, even if the log expires during a long silence. Events
written together are one stream entry (id ``0-<last seq>``, field ``e``: the events' JSON, one per line) and
one pub/sub message with the same bytes, so an NDJSON stream can pass them through untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final

import msgspec
from redis.asyncio import Redis

from shared import keys
from shared.serialization import dumps


class EventType(StrEnum):
    """What happened to a task. ``end`` is always the last event of a run that reached a final state."""

    STARTED = "started"
    PROGRESS = "progress"
    PARTIAL = "partial"
    RESULT = "result"
    ERROR = "error"
    ABORTED = "aborted"
    REQUEUED = "requeued"
    RETRYING = "retrying"
    GAP = "gap"
    END = "end"
    # A workflow's own events, in its log beside its steps' (``shared.workflows``; written by ``lib.lua``).
    WORKFLOW_STARTED = "workflow_started"
    STEP_STARTED = "step_started"
    STEP_ENDED = "step_ended"
    WORKFLOW_RETRIED = "workflow_retried"
    WORKFLOW_END = "workflow_end"


class EventHead(msgspec.Struct):
    """The fields a stream needs to route an event; the rest is passed through as bytes."""

    seq: int
    type: str
    task_id: str = ""  # how an API process's inbox routes it (shared/keys.py, "Inboxes")


FINAL_TYPE: Final = EventType.END.value
LINE_BREAK: Final = b"\n"
_head_decoder = msgspec.json.Decoder(EventHead)


def decode_head(raw: bytes) -> EventHead:
    """Read an event's sequence number and type without decoding its payload."""
    return _head_decoder.decode(raw)


def unpack(packed: bytes) -> list[bytes]:
    """The events of one stream entry or pub/sub message (JSON never contains a raw line break)."""
    return packed.split(LINE_BREAK)


def body(
    task_id: str, type_: EventType, data: Any = None, ts: float | None = None, trace_id: str | None = None
) -> bytes:
    """An event without its ``seq`` (the script that stores it puts the seq first). ``type`` must come first:
    scripts recognise an ``end`` by its leading bytes. ``trace_id`` (the OpenTelemetry trace the run belongs
    to, 32 hex digits) comes after ``data``, and only when the run has one."""
    moment = round(time.time() if ts is None else ts, 6)
    event = {"type": type_.value, "task_id": task_id, "ts": moment, "data": data}
    if trace_id:
        event["trace_id"] = trace_id
    return dumps(event)


def end_body(task_id: str, state: str, ts: float | None = None, trace_id: str | None = None) -> bytes:
    """The ``end`` event of a run that reached ``state``."""
    return body(task_id, EventType.END, {"state": state}, ts, trace_id)


def synthetic(seq: int, task_id: str, type_: EventType, data: Any) -> bytes:
    """An event a stream makes up itself (``gap``), numbered like a stored one but never stored."""
    return dumps({"seq": seq, "type": type_.value, "task_id": task_id, "ts": round(time.time(), 6), "data": data})


class EventLog:
    """Reads a task's stored events back; one instance serves every task of a process. ``stream`` names a log by
    its owner's id: a task's by default, a workflow's (``keys.flow_events``) for the workflows' instance."""

    def __init__(
        self, redis: Redis, *, max_len: int, ttl_seconds: int, stream: Callable[[str], str] = keys.events_stream
    ) -> None:
        self._redis = redis
        self.max_len = max_len
        self.ttl_ms = ttl_seconds * 1000
        self._stream = stream

    def channel(self, owner_id: str) -> str:
        """The pub/sub channel the log's live events are published on (the same name as the log)."""
        return self._stream(owner_id)

    async def read_after(self, task_id: str, after_seq: int, count: int = 1000) -> list[tuple[int, bytes]]:
        """Stored events with a sequence number above ``after_seq``, oldest first (about ``count`` entries)."""
        entries = await self._redis.xrange(self._stream(task_id), f"0-{after_seq + 1}", "+", count=count)
        events: list[tuple[int, bytes]] = []
        for _entry_id, fields in entries:
            for raw in unpack(fields[b"e"]):
                seq = decode_head(raw).seq
                if seq > after_seq:
                    events.append((seq, raw))
        return events

    async def last(self, task_id: str) -> tuple[int, bytes] | None:
        """The newest stored event, if any."""
        entries = await self._redis.xrevrange(self._stream(task_id), "+", "-", count=1)
        if not entries:
            return None
        raw = unpack(entries[0][1][b"e"])[-1]
        return decode_head(raw).seq, raw
