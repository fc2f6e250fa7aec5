"""Experiments, not Relay: Relay's own API with ONE recommended change monkeypatched in each.

BENCHMARKS.md recommends changes to api/ that bench/ may not make; these factories let a benchmark
measure a change before anyone edits the real code (``--app`` of ``bench.fanout``/``bench.http_submit``):

- ``bench.patched_api:fast_follow_app``: ``api.follow._next_item`` takes an already queued item
  without ``asyncio.wait_for`` (which wraps every ``queue.get()`` in a new Task), and waits with
  ``asyncio.timeout`` when it must.
- ``bench.patched_api:coalesced_wakeup_app``: the submit path's wake-up notice is published once per
  event-loop turn for all the submits that enqueued in it, instead of once per submit.
- ``bench.patched_api:one_trip_submit_app``: an immediate submit is one Lua script (depth check,
  arq's job key and queue entry in arq's own format, wake-up notice) instead of five round trips.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from types import ModuleType
from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

import api.follow
from api.app import create_app
from api.hub import Delivery, Signal
from api.resources import RelayApp
from shared import keys
from shared.serialization import dumps
from shared.settings import Settings
from shared.tasks import TaskState, TaskSubmission
from shared.wakeup import notify_workers
from worker.registry import TaskRegistry


async def next_item_without_task(
    queue: asyncio.Queue[Delivery | Signal], heartbeat: float, drain_deadline: float | None
) -> Delivery | Signal | None:
    """Same contract as ``api.follow._next_item``: the next item, or None at heartbeat/drain time."""
    if not queue.empty():
        return queue.get_nowait()  # a burst: no timer, no Task, no trip through the event loop
    timeout = heartbeat
    if drain_deadline is not None:
        timeout = max(0.0, min(timeout, drain_deadline - time.monotonic()))
    try:
        async with asyncio.timeout(timeout):
            return await queue.get()
    except TimeoutError:
        return None


def fast_follow_app() -> RelayApp:
    """Relay's app with ``next_item_without_task`` in place of ``api.follow._next_item``."""
    api.follow._next_item = next_item_without_task
    return create_app()


class CoalescedWakeup:
    """``notify_workers`` with the notices of one loop turn merged: under load many submits finish
    in the same turn, and one notice wakes the workers as well as fifty do."""

    def __init__(self) -> None:
        self._pending: set[tuple[int, str]] = set()
        self._sending: set[asyncio.Task[None]] = set()  # a reference, so a send is not collected mid-way

    async def __call__(self, redis: Redis, queue_name: str) -> None:
        key = (id(redis), queue_name)
        if key in self._pending:
            return
        self._pending.add(key)
        asyncio.get_running_loop().call_soon(self._send, redis, queue_name, key)

    def _send(self, redis: Redis, queue_name: str, key: tuple[int, str]) -> None:
        self._pending.discard(key)
        task = asyncio.ensure_future(notify_workers(redis, queue_name))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)


def coalesced_wakeup_app() -> RelayApp:
    """Relay's app with ``CoalescedWakeup`` wherever the submit path imported ``notify_workers``."""
    coalesced = CoalescedWakeup()
    for name in ("api.submit", "shared.enqueue"):  # where submit lives before / after a refactor
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "notify_workers"):
            module.notify_workers = coalesced  # type: ignore[attr-defined]
    return create_app()


# Depth check, arq's enqueue (job key + queue entry, same keys and format) and the wake-up notice, in
# one atomic script: one round trip instead of five (ZCARD, WATCH/EXISTS, MULTI..EXEC, PUBLISH).
_ENQUEUE_LUA = """
local depth = redis.call('ZCARD', KEYS[3])
if depth >= tonumber(ARGV[4]) then return {-1, depth} end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return {0, depth} end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[5])
redis.call('PUBLISH', KEYS[4], '1')
return {1, depth}
"""


# Where the submit function lives: api/submit.py at commit fcb108c, shared/enqueue.py after a refactor.
_SUBMIT_HOMES = (("shared.enqueue", "enqueue_task"), ("api.submit", "submit_task"))


def _submit_home() -> tuple[ModuleType, str]:
    """The module holding Relay's submit function, and the function's name."""
    for module_name, name in _SUBMIT_HOMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return module, name
    raise RuntimeError("no submit function found; update bench.patched_api._SUBMIT_HOMES")


async def submit_one_trip(
    pool: ArqRedis, registry: TaskRegistry, settings: Settings, submission: TaskSubmission
) -> Any:
    """Relay's submit for immediate submits with one Redis round trip; deferred ones, timeouts and
    every outcome but "enqueued" (queue full, a repeated id) go through the original, unchanged."""
    home, name = _submit_home()
    original = getattr(home, name)
    if submission.delay_seconds or submission.defer_until() is not None or submission.timeout_seconds is not None:
        return await original(pool, registry, settings, submission)
    spec = registry.get(submission.task)
    params = spec.validate(submission.args, submission.kwargs)
    task_id = submission.id or uuid.uuid4().hex
    now_ms = int(time.time() * 1000)
    job = serialize_job(spec.name, (), {"params": params}, None, now_ms, serializer=dumps)
    keys_ = [job_key_prefix + task_id, result_key_prefix + task_id, settings.queue_name]
    keys_.append(keys.wakeup_channel(settings.queue_name))
    args = [job, now_ms, pool.expires_extra_ms, settings.max_queue_depth, task_id]
    status, _depth = await pool.eval(_ENQUEUE_LUA, len(keys_), *keys_, *args)
    if status == 1:
        return home.Submitted(task_id, spec.name, True, TaskState.QUEUED)
    return await original(pool, registry, settings, submission)  # full or a repeat: its own errors


def one_trip_submit_app() -> RelayApp:
    """Relay's app with ``submit_one_trip`` in place of the submit route's submit function."""
    import api.routes.tasks

    _, name = _submit_home()
    setattr(api.routes.tasks, name, submit_one_trip)
    return create_app()
