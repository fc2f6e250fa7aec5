"""Which lane a job waits in: its task, queue, priority, tenant and limit keys (the design is in ``shared/keys.py``).

A lane id is ``<task>|<queue>|<priority>|<tenant>|<limit part>``; the limit part is ``<concurrency key value>/<rate
key value>`` for a task with keyed limits (each empty when that limit has no key), else empty. Every part but the
last is free of ``|`` by its own pattern; key values are made safe here (a value that is not short and plain is
replaced by a digest), so a lane id splits one way only and stays short enough for a record's first bytes. The
API (from the workers' published offers) and the worker (from its registry) compute the same lane for a submit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

DEFAULT_QUEUE: Final = "default"
MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 9
QUEUE_NAME_REGEX: Final = r"[a-z0-9][a-z0-9_.-]{0,63}"
_queue_name = re.compile(QUEUE_NAME_REGEX)
_plain_value = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")


def is_queue_name(value: str) -> bool:
    """True if ``value`` can name a queue."""
    return _queue_name.fullmatch(value) is not None


@dataclass(frozen=True)
class Limit:
    """At most ``running`` jobs of the task run at once across all workers; with ``key``, per value of that
    argument (``Limit(2, key="customer_id")``: two per customer)."""

    running: int
    key: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"running": self.running, "key": self.key}


@dataclass(frozen=True)
class Rate:
    """At most ``starts`` starts of the task per ``per_seconds`` across all workers (with ``key``, per value of
    that argument), spaced evenly: ``burst`` starts may come back to back after a quiet spell (default 1, so
    no window of ``per_seconds`` ever holds more than ``starts`` starts)."""

    starts: int
    per_seconds: float = 1.0
    key: str | None = None
    burst: int = 1

    @property
    def interval_ms(self) -> float:
        """The spacing between starts."""
        return self.per_seconds * 1000 / self.starts

    def describe(self) -> dict[str, Any]:
        return {"starts": self.starts, "per_seconds": self.per_seconds, "key": self.key, "burst": self.burst}


def limit_problem(concurrency: Limit | None, rate: Rate | None, params: tuple[str, ...]) -> str | None:
    """Why these limits cannot be used for a task with parameters ``params``, or None."""
    if concurrency is not None:
        if concurrency.running < 1:
            return "concurrency must allow at least 1 running job"
        if concurrency.key is not None and concurrency.key not in params:
            return f"the concurrency key {concurrency.key!r} is not one of its parameters"
    if rate is not None:
        if rate.starts < 1 or rate.per_seconds <= 0 or rate.burst < 1:
            return "a rate needs starts >= 1, per_seconds > 0 and burst >= 1"
        if rate.key is not None and rate.key not in params:
            return f"the rate key {rate.key!r} is not one of its parameters"
    return None


def key_value(value: Any) -> str:
    """An argument's value as it appears in a lane id: itself if short and plain, else ``#`` + a digest."""
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, int | float) else str(value)
    if _plain_value.fullmatch(text):
        return text
    return "#" + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


def limit_part(params: Mapping[str, Any], concurrency_key: str | None, rate_key: str | None) -> str:
    """The lane id's last part: which limit keys this job's arguments fall under."""
    if concurrency_key is None and rate_key is None:
        return ""
    c = key_value(params.get(concurrency_key)) if concurrency_key else ""
    r = key_value(params.get(rate_key)) if rate_key else ""
    return f"{c}/{r}"


def lane_id(task: str, queue: str, priority: int, tenant: str | None, part: str = "") -> str:
    """The lane a job of these attributes waits in."""
    return f"{task}|{queue}|{priority}|{tenant or ''}|{part}"


@dataclass(frozen=True)
class LaneParts:
    task: str
    queue: str
    priority: int
    tenant: str
    part: str


def parse(lane: str) -> LaneParts:
    """A lane id's parts; a bare task name is the lane of a job enqueued before named queues (the default
    queue, priority 0, no tenant, no limit key)."""
    fields = lane.split("|", 4)
    if len(fields) != 5:
        return LaneParts(lane, DEFAULT_QUEUE, 0, "", "")
    task, queue, priority, tenant, part = fields
    return LaneParts(task, queue, int(priority or 0), tenant, part)


def describe_key(parts: LaneParts, concurrency_key: str | None, rate_key: str | None) -> tuple[str, str]:
    """The (concurrency, rate) key values of a lane, as ``name=value`` text for a waiting reason."""
    c, _, r = parts.part.partition("/")
    return (f"{concurrency_key}={c}" if concurrency_key else "", f"{rate_key}={r}" if rate_key else "")
