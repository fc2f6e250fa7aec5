"""Hand-offs: jobs an enqueue claimed for this idle worker, taken from its own list (shared/keys.py "Hand-off").

The worker waits on its list with ``BLMPOP`` on a connection of its own: the item holds everything the claim would
have returned, so a submit to an idle system reaches the task with no claim round trip. One pop takes every item
waiting (``BLPOP``, one at a time, on a Redis older than 7.0): jobs handed together, by one enqueue of several,
start together, as a claim's would, instead of one round trip apart (a drain begun by hand-offs then ran in
staggered cohorts, each claiming its own few jobs: 7.6 Redis commands a job instead of 5.8). Stopping, the worker
leaves the idle registry (no enqueue hands it anything after that), pushes a stop mark behind whatever is already
in its list, and keeps taking items until the mark: those go back on the queue (``Engine.receive_handoff``). A
worker that cannot stop cleanly (Redis away, SIGKILL) leaves its items in the list; the sweep puts them back in
their lanes, their pickups given back, once their leases lapse (and a list left with only the stop mark expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from shared import keys
from shared.redis import close
from shared.waiting import cancel_and_wait
from worker.engine.engine import Engine

logger = logging.getLogger("relay.worker")

STOP_MARK = b"stop"  # never a job's item (those are JSON arrays)
STOP_SECONDS = 2.0  # how long a stop waits for the list's stop mark before giving up on it
STOP_MARK_TTL_MS = 3_600_000  # a stopping worker's list, should it be killed before taking its stop mark
POP_MOST = 100  # items one pop takes at most (a worker is handed no more than its free slots, and the stop mark)


class HandoffListener:
    """Takes this worker's handed jobs to its engine (see the module docstring)."""

    def __init__(self, redis: Redis, engine: Engine, queue_name: str, block_seconds: float) -> None:
        self._redis = redis  # its own: closed by ``stop``
        self._engine = engine
        self._queue_name = queue_name
        self._block_seconds = block_seconds  # shorter than the client's command timeout
        self._task: asyncio.Task[None] | None = None
        self._left = False
        self._handing_back: set[asyncio.Task[object]] = set()  # commits of items taken while stopping
        self._one_at_a_time = False  # True on a Redis without BLMPOP (before 7.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="relay-handoff")

    async def leave(self) -> None:
        """Leave the idle registry and mark the end of the list: nothing is handed to this worker after this."""
        if self._left:
            return
        self._left = True
        token = self._engine.token
        await self._redis.hdel(keys.idle_registry(self._queue_name), token)  # type: ignore[misc]
        # The list expires, in case this worker is killed before it takes the mark: the mark alone would stay for
        # good. Any job item behind it has a lease far shorter; the sweep takes such a job back long before.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(keys.handoff(token), STOP_MARK)
            pipe.pexpire(keys.handoff(token), STOP_MARK_TTL_MS)
            await pipe.execute()

    async def leave_at_stop(self) -> None:
        """``leave`` as the stop begins (``Engine.on_stop``); with Redis away, the worker's shutdown tries again."""
        try:
            await self.leave()
        except (RedisError, OSError) as exc:
            self._left = False
            logger.warning("could not leave the idle registry yet (%s); trying again as the worker exits", exc)

    async def stop(self) -> None:
        """Take every item up to the stop mark (back on the queue, as the worker stops), then end."""
        if self._task is None:
            return
        try:  # each step bounded: an unreachable Redis must not hold the worker's exit
            await asyncio.wait_for(self.leave(), STOP_SECONDS)
            await asyncio.wait_for(asyncio.shield(self._task), STOP_SECONDS)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("hand-offs not closed cleanly (%s); what is left goes back once its lease lapses", exc)
        await cancel_and_wait(self._task)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._take_leftovers(), STOP_SECONDS)
        if self._handing_back:
            await asyncio.gather(*self._handing_back, return_exceptions=True)
        await close(self._redis)

    async def _take_leftovers(self) -> None:
        """Items behind the mark (a claim sent before the stop registered this worker again), and the mark itself
        if the listener missed it: handed back now rather than once their leases lapse. No claim runs any more, so
        once out of the registry nothing new arrives; each pop is atomic, so nothing is dropped either."""
        key = keys.handoff(self._engine.token)
        await self._redis.hdel(keys.idle_registry(self._queue_name), self._engine.token)  # type: ignore[misc]
        while left := await self._redis.lpop(key, 100):  # type: ignore[misc]
            for raw in left:
                if raw != STOP_MARK:
                    self._take(raw, stopping=True)

    def _take(self, raw: bytes, stopping: bool = False) -> None:
        try:
            commit = self._engine.receive_handoff(raw, stopping)
        except (ValueError, TypeError) as exc:
            logger.error("ignoring a malformed hand-off %r: %s", raw[:80], exc)
            return
        if commit is not None:
            self._handing_back.add(commit)
            commit.add_done_callback(self._handing_back.discard)

    async def _listen(self) -> None:
        key = keys.handoff(self._engine.token)
        lost = False
        while True:
            try:
                items = await self._pop(key)
            except (RedisError, OSError) as exc:
                if not lost:
                    logger.warning("hand-off list unreachable (%s); claims still run meanwhile", exc)
                lost = True
                await asyncio.sleep(1.0)
                continue
            lost = False
            for at, raw in enumerate(items):
                if raw == STOP_MARK:
                    for behind in items[at + 1 :]:  # pushed by a registration that raced the stop: handed back
                        self._take(behind, stopping=True)
                    return
                self._take(raw)

    async def _pop(self, key: str) -> list[bytes]:
        """The items waiting in the list (none when the wait ran out), all at once where Redis has BLMPOP."""
        if not self._one_at_a_time:
            try:
                got = await self._redis.blmpop(self._block_seconds, 1, key, direction="LEFT", count=POP_MOST)  # type: ignore[arg-type,misc]
                return list(got[1]) if got else []
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self._one_at_a_time = True
                logger.info("Redis has no BLMPOP (before 7.0): hand-offs are taken one at a time")
        popped = await self._redis.blpop([key], timeout=self._block_seconds)  # type: ignore[arg-type,misc]
        return [popped[1]] if popped else []
