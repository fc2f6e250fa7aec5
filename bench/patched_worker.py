"""Experiments, not Relay: Relay's own worker with ONE candidate change monkeypatched in each.

``bench.worker_throughput --with-patched`` runs them next to Relay and bare arq:

- ``arq bench.patched_worker.MergedOutcomeWorker``: ``result`` and ``end`` are appended and published
  by ONE script call (the same XADD/PUBLISH per event, in order), so a job costs two event round
  trips instead of three. This is the change BENCHMARKS.md recommends for ``worker/runner.py``.
- ``arq bench.patched_worker.BatchedEventsWorker``: the event log sends the events that concurrent
  jobs publish in the same event-loop turn in one pipeline. Kept as the negative result: jobs rarely
  publish in the same turn, so the batches are ~1 event and nothing is saved.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import worker.settings as relay_settings
from shared import keys
from shared.events import _PUBLISH_LUA, EventLog, EventType
from shared.serialization import dumps
from worker.runner import EVENTS_CTX_KEY, OUTCOME_CTX_KEY, publish_outcome

_Pending = tuple[list[str], list[Any], "asyncio.Future[int]"]


class BatchingEventLog(EventLog):
    """``EventLog`` whose ``publish`` shares one pipeline round trip with every other publish that is
    ready in the same loop turn. A job awaits each publish, so one task's events keep their order."""

    def __init__(self, redis: Any, *, max_len: int, ttl_seconds: int) -> None:
        super().__init__(redis, max_len=max_len, ttl_seconds=ttl_seconds)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loaded = False

    async def publish(self, task_id: str, type_: EventType, data: Any = None) -> int:
        """Same contract as ``EventLog.publish``: returns the event's sequence number once stored."""
        body = dumps({"type": type_.value, "task_id": task_id, "ts": round(time.time(), 6), "data": data})
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        keys_ = [keys.events_stream(task_id), keys.events_channel(task_id)]
        self._pending.append((keys_, [body, self._max_len, self._ttl_ms], done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # one loop turn: let every runnable job add its event to this batch
        batch, self._pending, self._flusher = self._pending, [], None
        try:
            if not self._loaded:
                await self._redis.script_load(_PUBLISH_LUA)
                self._loaded = True
            async with self._redis.pipeline(transaction=False) as pipe:
                for keys_, args, _ in batch:
                    pipe.evalsha(self._script.sha, len(keys_), *keys_, *args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            replies = [exc] * len(batch)
        for (_, _, done), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                done.set_exception(reply)
            else:
                done.set_result(int(reply))


# Relay's publish script, looped: appends and publishes every ARGV[3..] event with consecutive seqs.
_PUBLISH_MANY_LUA = """
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
_MANY_CTX_KEY = "bench_publish_many"


def _body(task_id: str, type_: EventType, data: Any) -> bytes:
    return dumps({"type": type_.value, "task_id": task_id, "ts": round(time.time(), 6), "data": data})


async def _publish_outcome_merged(ctx: dict[str, Any]) -> None:
    """``worker.runner.publish_outcome`` with ``result`` + ``end`` in one round trip."""
    outcome = ctx.get(OUTCOME_CTX_KEY)
    if outcome is None:
        await publish_outcome(ctx)  # the re-queue path is unchanged
        return
    type_, data, state = outcome
    task_id: str = ctx["job_id"]
    log: EventLog = ctx[EVENTS_CTX_KEY]
    events = [_body(task_id, type_, data), _body(task_id, EventType.END, {"state": state.value})]
    keys_ = [keys.events_stream(task_id), keys.events_channel(task_id)]
    await ctx[_MANY_CTX_KEY](keys=keys_, args=[log._max_len, log._ttl_ms, *events])


async def _on_startup_merged(ctx: dict[str, Any]) -> None:
    await relay_settings.on_startup(ctx)
    ctx[_MANY_CTX_KEY] = ctx["redis"].register_script(_PUBLISH_MANY_LUA)


async def _on_startup(ctx: dict[str, Any]) -> None:
    await relay_settings.on_startup(ctx)
    plain: EventLog = ctx[EVENTS_CTX_KEY]
    ctx[EVENTS_CTX_KEY] = BatchingEventLog(ctx["redis"], max_len=plain._max_len, ttl_seconds=plain._ttl_ms // 1000)


def _relay_settings_with(name: str, **overrides: Any) -> type:
    """A settings class with every arq argument of ``worker.settings``, some of them replaced."""
    public = {n: getattr(relay_settings, n) for n in dir(relay_settings) if not n.startswith("_")}
    return type(name, (), public | overrides)


MergedOutcomeWorker = _relay_settings_with(
    "MergedOutcomeWorker", on_startup=_on_startup_merged, after_job_end=_publish_outcome_merged
)
BatchedEventsWorker = _relay_settings_with("BatchedEventsWorker", on_startup=_on_startup)
