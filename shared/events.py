"""Task events: their schema, and the one way to publish and replay them.

An event is stored in a capped, expiring Redis Stream (for replay and resume) and published on the
task's pub/sub channel (for live delivery) by one Lua script, so both always agree on its sequence
number and no subscriber can see an event that replay would not.
"""

from __future__ import annotations

import time
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
    END = "end"


class EventHead(msgspec.Struct):
    """The fields a stream needs to route an event; the rest is passed through as bytes."""

    seq: int
    type: str


FINAL_TYPE: Final = EventType.END.value
_head_decoder = msgspec.json.Decoder(EventHead)

# Sequence numbers are the stream IDs' second half ("0-<seq>"), so XRANGE can resume from any of them.
# ARGV: max length, TTL in ms, then one or more event bodies (JSON objects without their seq).
_PUBLISH_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 0
if #last > 0 then seq = tonumber(string.match(last[1][1], '-(%d+)$')) end
for i = 3, #ARGV do
  seq = seq + 1
  local event = '{"seq":' .. seq .. ',' .. string.sub(ARGV[i], 2)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. seq, 'e', event)
  redis.call('PUBLISH', KEYS[2], event)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return seq
"""


def decode_head(raw: bytes) -> EventHead:
    """Read an event's sequence number and type without decoding its payload."""
    return _head_decoder.decode(raw)


class EventLog:
    """Publishes a task's events and reads them back; one instance serves every task of a process."""

    def __init__(self, redis: Redis, *, max_len: int, ttl_seconds: int) -> None:
        self._redis = redis
        self._max_len = max_len
        self._ttl_ms = ttl_seconds * 1000
        self._script = redis.register_script(_PUBLISH_LUA)

    async def publish(self, task_id: str, type_: EventType, data: Any = None) -> int:
        """Append an event to the task's log and publish it live; returns its sequence number."""
        return await self.publish_many(task_id, [(type_, data)])

    async def publish_many(self, task_id: str, events: list[tuple[EventType, Any]]) -> int:
        """Several events in one round trip (e.g. ``result`` and ``end``); returns the last one's number."""
        ts = round(time.time(), 6)
        bodies = [dumps({"type": t.value, "task_id": task_id, "ts": ts, "data": d}) for t, d in events]
        keys_ = [keys.events_stream(task_id), keys.events_channel(task_id)]
        seq = await self._script(keys=keys_, args=[self._max_len, self._ttl_ms, *bodies])
        return int(seq)

    async def read_after(self, task_id: str, after_seq: int, count: int = 1000) -> list[tuple[int, bytes]]:
        """Stored events with a sequence number above ``after_seq``, oldest first (at most ``count``)."""
        entries = await self._redis.xrange(keys.events_stream(task_id), f"0-{after_seq + 1}", "+", count=count)
        return [(int(entry_id.rsplit(b"-", 1)[1]), fields[b"e"]) for entry_id, fields in entries]

    async def last(self, task_id: str) -> tuple[int, bytes] | None:
        """The newest stored event, if any."""
        entries = await self._redis.xrevrange(keys.events_stream(task_id), "+", "-", count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        return int(entry_id.rsplit(b"-", 1)[1]), fields[b"e"]
