"""The one place Relay reaches into arq's ``Worker`` (arq 0.28.0, pinned in pyproject).

``arq worker.settings`` builds an ``arq.worker.Worker`` and runs arq's own main loop, signal handling, grace
period (``job_completion_wait``), health key and shutdown; Relay replaces what happens inside each poll:
- ``Worker._poll_iteration`` -> ``Engine.poll``: claim due jobs in one script call instead of arq's five round
  trips per job (WATCH/EXISTS/ZSCORE/MULTI/PSETEX/EXEC and the job fetch), run them with Relay's events,
  timeouts, retries and leases, check aborts only while jobs run;
- ``arq.worker.poll`` (the timer arq's main loop iterates) -> ``Engine.timer``: sleep until the next due job,
  lapsing lease or wake-up notice, instead of a fixed poll;
- ``Worker.handle_sig`` and ``Worker.handle_sig_wait_for_completion`` are wrapped to raise Relay's shutdown
  flag first (so a cancel is known to be a shutdown, never guessed), and so a second signal stops at once:
  running jobs are cancelled and re-queued without waiting for the grace period; the signal also sets the
  engine's stop deadline (``Engine.begin_stop``), past which nothing waits on Redis;
- ``Worker.record_health`` -> ``_record_health``: arq's health value (what ``arq --check`` prints) with
  Relay's counts: its outcomes (arq's own counters never move, since arq's job runner does not run jobs),
  and as ``queued`` the jobs waiting on the queue (arq's count includes the running ones, which Relay keeps
  there under their leases);
- ``Worker.close`` -> ``_close``: arq's, except that a health key Redis cannot take back (it is away) is left
  to expire by itself, instead of raising out of the worker before ``on_shutdown`` ran.
arq's job, result and in-progress records stay what arq's ``Job`` API reads. ``install`` checks arq's
version and the shape of everything it replaces or relies on, and fails loudly if they differ.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import signal
import time
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from signal import Signals
from typing import Any

import arq
import arq.worker
from arq.worker import Worker
from redis.exceptions import RedisError

from shared.queuecounts import waiting_jobs
from shared.scripts import Scripts
from worker.engine.engine import Engine

logger = logging.getLogger("relay.worker")

ARQ_VERSION = "0.28.0"
ENGINE_CTX_KEY = "relay_engine"
# What Relay relies on: each replaced function's parameters, and the Worker attributes Engine uses.
EXPECTED_SIGNATURES = {
    "_poll_iteration": ["self"],
    "handle_sig": ["self", "signum"],
    "handle_sig_wait_for_completion": ["self", "signum"],
    "heart_beat": ["self"],
    "main": ["self"],
    "close": ["self"],
    "record_health": ["self"],
}
# arq's Worker.close, statement by statement, which ``_close`` does too (with the health key's delete allowed to fail).
ARQ_CLOSE_STATEMENTS = (
    "if not self._handle_signals:",
    "self.handle_sig(signal.SIGUSR1)",
    "if not self._pool:",
    "await asyncio.gather(*self.tasks.values())",
    "await self.pool.delete(self.health_check_key)",
    "if self.on_shutdown:",
    "await self.on_shutdown(self.ctx)",
    "await self.pool.close(close_connection_pool=True)",
    "self._pool = None",
)
EXPECTED_ATTRIBUTES = (
    "tasks",
    "job_counter",
    "max_jobs",
    "allow_pick_jobs",
    "ctx",
    "main_task",
    "functions",
    "jobs_complete",
    "jobs_failed",
    "jobs_retried",
    "health_check_key",
    "health_check_interval",
    "_last_health_check",
    "queue_name",
)
_engine: Engine | None = None


class ArqMismatch(RuntimeError):
    """The installed arq is not the one Relay's engine was written against."""


def check_arq() -> None:
    """Fail loudly unless arq is the version, and ``Worker`` has the shape, this module was written for."""
    if arq.VERSION != ARQ_VERSION:
        raise ArqMismatch(f"Relay's worker engine is written for arq {ARQ_VERSION}, found {arq.VERSION}")
    for name, expected in EXPECTED_SIGNATURES.items():
        function = getattr(Worker, name, None)
        original = getattr(function, "__wrapped__", function)
        if original is None or list(inspect.signature(original).parameters) != expected:
            raise ArqMismatch(f"arq.worker.Worker.{name} is not shaped as Relay expects ({expected})")
    poll = getattr(arq.worker, "poll", None)
    original_poll = getattr(poll, "__wrapped__", poll)
    if original_poll is None or list(inspect.signature(original_poll).parameters) != ["step"]:
        raise ArqMismatch("arq.worker.poll is not shaped as Relay expects (step)")
    close = getattr(Worker.close, "__wrapped__", Worker.close)
    close_source = inspect.getsource(close)
    if any(statement not in close_source for statement in ARQ_CLOSE_STATEMENTS):
        raise ArqMismatch("arq.worker.Worker.close is not what Relay's _close mirrors")
    init = inspect.signature(Worker.__init__).parameters
    for name in ("job_completion_wait", "max_jobs", "poll_delay", "handle_signals"):
        if name not in init:
            raise ArqMismatch(f"arq.worker.Worker takes no {name!r} argument")
    source = inspect.getsource(Worker.__init__)
    for attribute in EXPECTED_ATTRIBUTES:
        if f"self.{attribute}" not in source:
            raise ArqMismatch(f"arq.worker.Worker has no attribute {attribute!r}")


def install() -> None:
    """Idempotent; called when ``worker.settings`` is imported, before arq builds its ``Worker`` (which binds
    its signal handlers at construction)."""
    check_arq()
    if getattr(Worker._poll_iteration, "_relay", False):
        return
    Worker._poll_iteration = _poll_iteration  # type: ignore[method-assign]
    Worker.handle_sig = _on_signal(Worker.handle_sig)  # type: ignore[method-assign,assignment]
    Worker.handle_sig_wait_for_completion = _on_signal(  # type: ignore[method-assign,assignment]
        Worker.handle_sig_wait_for_completion
    )
    Worker.close = _close  # type: ignore[method-assign]
    Worker.record_health = _record_health  # type: ignore[method-assign]
    arq.worker.poll = _timer


def attach(engine: Engine) -> None:
    """Make ``engine`` the one this process's worker polls with (from ``on_startup``)."""
    global _engine
    _engine = engine


def current() -> Engine | None:
    return _engine


async def _poll_iteration(self: Worker) -> None:
    engine = _engine
    if engine is None:
        raise RuntimeError("Relay's engine is not attached: on_startup did not run")
    count_outcomes(self, engine)
    await engine.poll(self)


def count_outcomes(worker: Worker, engine: Engine) -> None:
    """arq's counters, which its log lines and health value show, from Relay's own count (``worker.metrics``):
    a retried failure or a re-queue is a retry to arq, an abort a failure (as arq counts them)."""
    totals = engine.metrics.totals
    worker.jobs_complete = totals["succeeded"]
    worker.jobs_failed = totals["failed"] + totals["aborted"]
    worker.jobs_retried = totals["retrying"] + totals["requeued"]


async def _record_health(self: Worker) -> None:
    """arq's ``record_health`` (its health key, its value's format) with Relay's counts (module docstring)."""
    now = time.time()
    if now - self._last_health_check < self.health_check_interval:
        return
    self._last_health_check = now
    engine = _engine
    if engine is not None:
        count_outcomes(self, engine)
    ongoing = sum(not t.done() for t in self.tasks.values())
    scripts = engine.scripts if engine is not None else Scripts(self.pool)
    queued = await waiting_jobs(scripts, self.queue_name)  # in the lanes: running jobs are not there
    value = (
        f"{datetime.now():%b-%d %H:%M:%S} j_complete={self.jobs_complete} j_failed={self.jobs_failed} "
        f"j_retried={self.jobs_retried} j_ongoing={ongoing} queued={queued}"
    )
    await self.pool.psetex(self.health_check_key, int((self.health_check_interval + 1) * 1000), value.encode())


_poll_iteration._relay = True  # type: ignore[attr-defined]


def _timer(step: float = 0.5) -> AsyncGenerator[float, None]:
    engine = _engine
    if engine is None:
        raise RuntimeError("Relay's engine is not attached: on_startup did not run")
    return engine.timer(step)


@functools.wraps(Worker.close)
async def _close(self: Worker) -> None:
    """arq's ``Worker.close`` (``ARQ_CLOSE_STATEMENTS``), but a stopping worker whose Redis is away still runs
    ``on_shutdown`` and exits: the health key it could not delete expires by itself within
    ``health_check_interval``, and every Redis call here gives up at the engine's stop deadline."""
    if not self._handle_signals:
        self.handle_sig(signal.SIGUSR1)
    if not self._pool:
        return
    await asyncio.gather(*self.tasks.values())
    try:
        await self.pool.delete(self.health_check_key)
    except (RedisError, OSError) as exc:
        logger.warning("could not delete the health key while stopping (%s); it expires by itself", exc)
    if self.on_shutdown:
        await self.on_shutdown(self.ctx)
    await self.pool.close(close_connection_pool=True)
    self._pool = None


def _on_signal(handler: Callable[[Worker, Signals], None]) -> Callable[[Worker, Signals], None]:
    """Raise the shutdown flag before arq handles the signal; on a second signal, stop at once."""

    @functools.wraps(handler)
    def wrapper(self: Worker, signum: Signals) -> None:
        engine = _engine
        if engine is None:
            handler(self, signum)
            return
        if engine.shutting_down:
            logger.warning("second %s: cancelling running jobs now; they go back on the queue", Signals(signum).name)
            engine.begin_stop(0)
            Worker.handle_sig.__wrapped__(self, signum)  # type: ignore[attr-defined]
            return
        running = len(engine.runs)
        engine.begin_stop(self._job_completion_wait if running else 0)
        if any(task.done() for task in self.tasks.values()):
            # arq's grace period waits until its tasks are gone, and only a poll drops finished ones: poll now,
            # not at the end of the idle sleep (up to RELAY_POLL_DELAY_SECONDS after the signal).
            engine.wake.set()
        if running and self._job_completion_wait:
            logger.warning(
                "%s: waiting up to %ss for %d running jobs to finish (they are re-queued after that); "
                "signal again to stop now",
                Signals(signum).name,
                self._job_completion_wait,
                running,
            )
        handler(self, signum)

    return wrapper


def installed_functions() -> dict[str, Any]:
    """What is installed on arq right now (for tests)."""
    return {"_poll_iteration": Worker._poll_iteration, "poll": arq.worker.poll}
