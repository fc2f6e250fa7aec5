"""Experiments, not Relay: Relay's own worker with ONE candidate change monkeypatched in each.

``bench.worker_throughput --with-patched`` runs them next to Relay and bare arq:

(The other experiment measured here, ``result`` and ``end`` in one script call, is now Relay's own code:
``EventLog.publish_many``, used by ``worker.runner.publish_outcome``.)
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
from worker.runner import EVENTS_CTX_KEY

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
        self._pending.append((keys_, [self._max_len, self._ttl_ms, body], done))
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


async def _on_startup(ctx: dict[str, Any]) -> None:
    await relay_settings.on_startup(ctx)
    plain: EventLog = ctx[EVENTS_CTX_KEY]
    ctx[EVENTS_CTX_KEY] = BatchingEventLog(ctx["redis"], max_len=plain._max_len, ttl_seconds=plain._ttl_ms // 1000)


def _relay_settings_with(name: str, **overrides: Any) -> type:
    """A settings class with every arq argument of ``worker.settings``, some of them replaced."""
    public = {n: getattr(relay_settings, n) for n in dir(relay_settings) if not n.startswith("_")}
    return type(name, (), public | overrides)


BatchedEventsWorker = _relay_settings_with("BatchedEventsWorker", on_startup=_on_startup)
