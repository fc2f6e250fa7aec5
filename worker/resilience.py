"""Keeps an arq 0.28 worker alive through a Redis restart.

Commands on the worker's pool are retried with backoff (``shared.redis``), but arq picks a job up
inside a WATCH block, where redis-py turns a lost connection into a ``WatchError`` that arq only
expects from ``EXEC``: it escapes ``Worker.start_jobs`` and ends the worker. It also leaves behind the
concurrency slot that ``start_jobs`` had taken for that one job. This wrapper catches exactly those
errors, gives the slot back and lets the next poll try again; the job itself is untouched in Redis
(its pickup never completed). Written against arq 0.28.0, which pyproject pins.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from arq.worker import Worker
from redis.exceptions import ConnectionError, TimeoutError, WatchError

logger = logging.getLogger("relay.worker")

StartJobs = Callable[[Worker, list[bytes]], Awaitable[None]]
_PICKUP_ERRORS = (WatchError, ConnectionError, TimeoutError, OSError)


def survive_pickup_errors(start_jobs: StartJobs) -> StartJobs:
    """Wrap ``Worker.start_jobs`` (see module docstring)."""
    if getattr(start_jobs, "_relay_wrapped", False):
        return start_jobs

    @functools.wraps(start_jobs)
    async def wrapper(self: Worker, job_ids: list[bytes]) -> None:
        try:
            await start_jobs(self, job_ids)
        except _PICKUP_ERRORS as exc:
            # The one job whose pickup was cut short took a slot and never started.
            self.job_counter -= 1
            self.sem.release()
            logger.warning("job pickup interrupted by a Redis error (%s); retrying on the next poll", exc)

    wrapper._relay_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Idempotent; called when a worker starts."""
    Worker.start_jobs = survive_pickup_errors(Worker.start_jobs)  # type: ignore[method-assign,assignment]
