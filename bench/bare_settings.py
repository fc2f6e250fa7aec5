"""A bare arq worker, the baseline of ``bench.worker_throughput``: ``arq bench.bare_settings.WorkerSettings``.

It takes the same environment as Relay's worker and mirrors every arq option ``worker.settings``
sets (queue, concurrency, poll delay, timeouts, tries, result TTL, abort support, JSON serializer), and
its one function is also called ``echo`` and takes the same ``params`` keyword. So the same enqueued
jobs run on both, and the difference is only what Relay adds per job: argument validation, the
``started``/``result``/``end`` events (one Lua script each), its own timeout and the wake-up listener.
"""

from __future__ import annotations

from typing import Any

from arq.worker import func

from shared.redis import redis_settings as _redis_settings
from shared.serialization import dumps, loads
from shared.settings import get_settings

READY_MARKER = "bare arq worker ready"

_config = get_settings()


async def _echo(ctx: dict[str, Any], params: dict[str, Any], timeout_seconds: float | None = None) -> dict[str, str]:
    """What Relay's ``echo`` returns, without Relay around it."""
    return {"echo": str(params.get("message", "hello"))}


async def _startup(ctx: dict[str, Any]) -> None:
    print(READY_MARKER, flush=True)  # the bench waits for this line, as it waits for Relay's


class WorkerSettings:
    """What ``arq bench.bare_settings.WorkerSettings`` loads."""

    functions = [func(_echo, name="echo", max_tries=_config.max_pickups)]
    redis_settings = _redis_settings(_config)
    queue_name = _config.queue_name
    max_jobs = _config.worker_concurrency
    job_timeout = _config.job_timeout_seconds
    poll_delay = _config.poll_delay_seconds
    max_tries = _config.max_pickups
    keep_result = _config.result_ttl_seconds
    job_completion_wait = _config.worker_grace_seconds
    allow_abort_jobs = True
    retry_jobs = True
    job_serializer = dumps
    job_deserializer = loads
    on_startup = _startup
