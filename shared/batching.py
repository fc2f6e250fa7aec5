"""Coalescing concurrent calls into one Redis round trip.

While one batch is in flight, new items wait and go together in the next: under load, batches grow by
themselves (one script call for many submits, or for many finished jobs), and an idle caller waits only one
event-loop turn. One batch at a time per batcher also keeps the order of items, which events rely on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from shared import keys

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
Flush = Callable[[list[Item]], Awaitable[Sequence[Outcome]]]


class Batcher(Generic[Item, Outcome]):
    """Calls ``flush`` with every item submitted meanwhile; each submitter gets its own item's outcome."""

    def __init__(self, flush: Flush[Item, Outcome], max_batch: int = 256) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Outcome:
        """Queue ``item`` for the next batch and wait for its outcome (a failed flush fails every item)."""
        return await asyncio.shield(self.submit_nowait(item))

    def submit_nowait(self, item: Item) -> asyncio.Future[Outcome]:
        """Queue ``item`` now (so items keep the order of the calls) and return its future outcome."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="relay-batcher")
        return future

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not self._pending and (self._worker is None or self._worker.done())

    async def wait_idle(self) -> None:
        """Until everything submitted so far has been flushed."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                outcomes = await self._flush([item for item, _ in batch])
            except BaseException as exc:  # every waiter must hear about it, even of a cancel
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)


async def per_shard(
    batch: list[Item], task_of: Callable[[Item], str], flush: Flush[Item, Outcome]
) -> Sequence[Outcome]:
    """``flush`` of ``batch``, one call per shard of the queue (``shared/keys.py``: a script runs on one slot),
    each in that shard's key layout (``keys.on_shard``), side by side; the outcomes in ``batch``'s order. With one
    shard: ``flush(batch)`` itself."""
    if keys.shard_count() == 1:
        return await flush(batch)
    by_shard: dict[int, list[int]] = {}
    for i, item in enumerate(batch):
        by_shard.setdefault(keys.shard_of(task_of(item)), []).append(i)

    async def on(shard: int, at: list[int]) -> Sequence[Outcome]:
        with keys.on_shard(shard):
            return await flush([batch[i] for i in at])

    groups = list(by_shard.items())
    replies = await asyncio.gather(*(on(shard, at) for shard, at in groups))
    outcomes: dict[int, Outcome] = {}
    for (_, at), shard_outcomes in zip(groups, replies, strict=True):
        outcomes.update(zip(at, shard_outcomes, strict=True))
    return [outcomes[i] for i in range(len(batch))]
