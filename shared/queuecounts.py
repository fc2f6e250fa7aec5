"""What a deployment's queue holds (due, deferred, running), in total, per task and per named queue: for
``/metrics``, ``/stats`` and the dev runner. One script call (``counts.lua``) reads the lanes of ``shared/keys.py``
on Redis's clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared import keys
from shared.scripts import Scripts


@dataclass(frozen=True)
class TaskCounts:
    """Waiting jobs of one task: due now, and deferred or waiting for a retry."""

    due: int
    deferred: int


@dataclass(frozen=True)
class NamedQueueCounts:
    """Jobs of one named queue (``shared.lanes``) by state."""

    due: int
    deferred: int
    running: int


@dataclass(frozen=True)
class QueueCounts:
    """Jobs of the deployment by state; ``tasks`` holds the waiting ones per task name, ``queues`` every named
    queue with jobs."""

    due: int
    deferred: int
    running: int
    tasks: dict[str, TaskCounts] = field(default_factory=dict)
    queues: dict[str, NamedQueueCounts] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        """Jobs not running yet (what a submit's depth check counts)."""
        return self.due + self.deferred


async def waiting_jobs(scripts: Scripts, queue_name: str) -> int:
    """Jobs not running yet (due or deferred), in one short call per shard of the queue."""
    total = 0
    for shard in keys.shards():
        with keys.on_shard(shard):
            total += int(await scripts.counts(keys=[keys.schedule(queue_name)], args=["waiting"]))
    return total


async def queue_counts(scripts: Scripts, queue_name: str) -> QueueCounts:
    """The queue's counts, in one round trip per shard of the queue (summed)."""
    counts = [await _shard_counts(scripts, queue_name, shard) for shard in keys.shards()]
    if len(counts) == 1:
        return counts[0]
    tasks: dict[str, TaskCounts] = {}
    queues: dict[str, NamedQueueCounts] = {}
    for c in counts:
        for name, t in c.tasks.items():
            was = tasks.get(name, TaskCounts(0, 0))
            tasks[name] = TaskCounts(was.due + t.due, was.deferred + t.deferred)
        for name, q in c.queues.items():
            old = queues.get(name, NamedQueueCounts(0, 0, 0))
            queues[name] = NamedQueueCounts(old.due + q.due, old.deferred + q.deferred, old.running + q.running)
    due, deferred, running = (sum(getattr(c, f) for c in counts) for f in ("due", "deferred", "running"))
    return QueueCounts(due, deferred, running, tasks, queues)


async def _shard_counts(scripts: Scripts, queue_name: str, shard: int) -> QueueCounts:
    with keys.on_shard(shard):
        due, deferred, running, per, named = await scripts.counts(keys=[keys.schedule(queue_name)])
    tasks = {name.decode(): TaskCounts(int(d), int(w)) for name, d, w in per}
    queues = {q.decode(): NamedQueueCounts(int(d), int(w), int(r)) for q, d, w, r in named}
    return QueueCounts(int(due), int(deferred), int(running), tasks, queues)


async def recount_depths(scripts: Scripts, queue_name: str) -> None:
    """Count every named queue's waiting jobs again (the depth a submit is checked against; ``shared/keys.py``), of
    the shard this call works on."""
    await scripts.counts(keys=[keys.schedule(queue_name)], args=["recount"])
