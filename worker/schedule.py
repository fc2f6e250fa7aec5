"""Periodic tasks: a schedule declared next to its task, computed with arq's own cron (``arq.cron.next_cron``).

Each schedule point becomes an ordinary task (an id, events, a place in ``GET /tasks``) with the id
``cron-<task>-<schedule>-<unix ms>``: every worker enqueues each point, the enqueue script creates it once,
so a point runs once however many workers run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from arq.cron import next_cron

Field = int | set[int] | None


@dataclass(frozen=True)
class Schedule:
    """When to run: like arq's ``cron`` (each field an int, a set of ints, or None for any), in UTC.
    ``Schedule(minute={0, 30})`` runs at :00 and :30 of every hour; ``Schedule(second=None)`` every second.
    ``kwargs`` are the task's arguments for these runs."""

    month: Field = None
    day: Field = None
    weekday: Field = None  # 0 is Monday
    hour: Field = None
    minute: Field = None
    second: Field = 0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first point of this schedule after ``moment`` (a UTC datetime)."""
        return next_cron(
            moment,
            month=self.month,
            day=self.day,
            weekday=self.weekday,
            hour=self.hour,
            minute=self.minute,
            second=self.second,
            microsecond=0,
        )


def point_id(task: str, index: int, at: dt.datetime) -> str:
    """The task id of one schedule point (the same on every worker)."""
    return f"cron-{task}-{index}-{int(at.timestamp() * 1000)}"
