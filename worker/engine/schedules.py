"""Enqueuing the points of the tasks' schedules (``worker.schedule``), from every worker.

Each point is enqueued a little ahead (due at its exact time), with an id every worker computes alike, so the
enqueue script creates it once however many workers try. A worker that was down skips the points it missed.

A point that cannot be enqueued is never fatal: an exception here would end arq's loop, and every restart
would meet the same point again. It is skipped with one warning (its id taken by a task with other arguments,
the queue full, arguments that do not fit), or tried again on the next poll when Redis itself failed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from shared.durability import NotReplicated
from shared.enqueue import Enqueuer, prepare
from shared.errors import QueueFull, SubmissionError
from shared.settings import Settings
from shared.tasks import TaskSubmission
from worker.registry import TaskRegistry, TaskSpec
from worker.schedule import Schedule, point_id

logger = logging.getLogger("relay.worker.schedules")

AHEAD_SECONDS = 2.0  # how early a point is enqueued (it stays deferred until its time)


@dataclass
class _Next:
    spec: TaskSpec
    index: int
    schedule: Schedule
    at: dt.datetime


class Scheduler:
    """The next point of every schedule of a worker's tasks."""

    def __init__(self, registry: TaskRegistry, settings: Settings, enqueuer: Enqueuer) -> None:
        self._settings = settings
        self._enqueuer = enqueuer
        now = dt.datetime.now(dt.UTC)
        self._next = [
            _Next(spec, i, schedule, schedule.next_after(now))
            for spec in registry
            for i, schedule in enumerate(spec.schedules)
        ]
        self.enqueued = 0

    @property
    def next_ms(self) -> float | None:
        """When the next point should be enqueued (ms since the epoch), if there is a schedule."""
        if not self._next:
            return None
        return min(n.at for n in self._next).timestamp() * 1000 - AHEAD_SECONDS * 1000

    async def enqueue_due(self) -> None:
        """Enqueue every point within ``AHEAD_SECONDS``; advance each schedule past what it enqueued."""
        horizon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=AHEAD_SECONDS)
        for entry in self._next:
            while entry.at <= horizon:
                await self._enqueue(entry)
                entry.at = entry.schedule.next_after(entry.at)

    async def _enqueue(self, entry: _Next) -> None:
        task_id = point_id(entry.spec.name, entry.index, entry.at)
        submission = TaskSubmission(task=entry.spec.name, kwargs=entry.schedule.kwargs, id=task_id, run_at=entry.at)
        try:
            submitted = await self._enqueuer.enqueue(
                prepare(entry.spec, self._settings, submission, tenant=self._settings.schedule_tenant or None)
            )
        except (RedisError, OSError):
            raise  # the poll says so and tries this point again on its next round
        except QueueFull:
            logger.warning("schedule point %s skipped: the queue is full", task_id)
            return
        except NotReplicated as exc:  # on the primary, so it runs; another worker's enqueue of it is the same
            logger.warning("schedule point %s enqueued but not confirmed: %s", task_id, exc)
            return
        except SubmissionError as exc:  # IdConflict (anyone may submit a point's id first), InvalidArguments...
            logger.warning("schedule point %s skipped: %s: %s", task_id, type(exc).__name__, exc.message)
            return
        except Exception as exc:  # whatever else: still not worth the worker
            logger.warning("schedule point %s skipped: %s: %s", task_id, type(exc).__name__, exc)
            return
        if submitted.created:
            self.enqueued += 1
            logger.info("scheduled %s for %s", task_id, entry.at.isoformat())
