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
  running jobs are cancelled and re-queued without waiting for the grace period.
arq's job, result and in-progress records stay what arq's ``Job`` API reads. ``install`` checks arq's
version and the shape of everything it replaces or relies on, and fails loudly if they differ.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Callable
from signal import Signals
from typing import Any

import arq
import arq.worker
from arq.worker import Worker

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
}
EXPECTED_ATTRIBUTES = ("tasks", "job_counter", "max_jobs", "allow_pick_jobs", "ctx", "main_task", "functions")
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
    await engine.poll(self)


_poll_iteration._relay = True  # type: ignore[attr-defined]


def _timer(step: float = 0.5) -> AsyncGenerator[float, None]:
    engine = _engine
    if engine is None:
        raise RuntimeError("Relay's engine is not attached: on_startup did not run")
    return engine.timer(step)


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
            Worker.handle_sig.__wrapped__(self, signum)  # type: ignore[attr-defined]
            return
        engine.shutting_down = True
        running = len(engine.runs)
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
