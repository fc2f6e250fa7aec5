"""Keeps an arq 0.28 worker alive through a Redis restart.

Commands on the worker's pool are retried with backoff (``shared.redis``), but two paths escape that:
- arq picks a job up inside a WATCH block, where redis-py turns a lost connection into a
  ``WatchError`` that arq only expects from ``EXEC``: it escapes ``Worker.start_jobs`` and leaves
  behind the concurrency slot ``start_jobs`` took for that one job;
- a connection that drops during its handshake (Redis shutting down as it is reached) fails before
  redis-py's retry applies, anywhere in arq's poll iteration.
Either would end the worker. These wrappers catch exactly those errors, give the slot back, and let the
next poll try again; jobs are untouched in Redis (a pickup that did not complete never started).
Written against arq 0.28.0, which pyproject pins.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from arq.worker import Worker
from redis.exceptions import RedisError, WatchError

logger = logging.getLogger("relay.worker")

StartJobs = Callable[[Worker, list[bytes]], Awaitable[None]]
PollIteration = Callable[[Worker], Awaitable[None]]
_REDIS_FAILURES = (RedisError, OSError)


def survive_pickup_errors(start_jobs: StartJobs) -> StartJobs:
    """Wrap ``Worker.start_jobs`` (see module docstring)."""
    if getattr(start_jobs, "_relay_wrapped", False):
        return start_jobs

    @functools.wraps(start_jobs)
    async def wrapper(self: Worker, job_ids: list[bytes]) -> None:
        try:
            await start_jobs(self, job_ids)
        except (WatchError, *_REDIS_FAILURES) as exc:
            # The one job whose pickup was cut short took a slot and never started.
            self.job_counter -= 1
            self.sem.release()
            logger.warning("job pickup interrupted by a Redis error (%s); retrying on the next poll", exc)

    wrapper._relay_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def survive_poll_errors(poll_iteration: PollIteration) -> PollIteration:
    """Wrap ``Worker._poll_iteration``: a Redis failure skips one poll instead of ending the worker."""
    if getattr(poll_iteration, "_relay_wrapped", False):
        return poll_iteration

    @functools.wraps(poll_iteration)
    async def wrapper(self: Worker) -> None:
        try:
            await poll_iteration(self)
        except _REDIS_FAILURES as exc:
            logger.warning("poll failed on a Redis error (%s); polling again", exc)

    wrapper._relay_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Idempotent; called when a worker starts."""
    Worker.start_jobs = survive_pickup_errors(Worker.start_jobs)  # type: ignore[method-assign,assignment]
    Worker._poll_iteration = survive_poll_errors(Worker._poll_iteration)  # type: ignore[method-assign,assignment]
