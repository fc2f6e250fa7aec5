"""Noticing a task that blocks the event loop (a ``time.sleep`` or CPU-bound loop in an ``async def``).

While the loop is blocked, every other task of the worker is frozen. A watchdog thread checks that the loop
ticks; when it has not for ``RELAY_STALL_WARNING_SECONDS``, it looks at the loop thread's stack for a
registered task's frame and logs one warning naming that task, and another when the loop is free again.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from types import CodeType, FrameType

logger = logging.getLogger("relay.worker.stalls")

TICK_SECONDS = 0.05


class StallWatchdog:
    """Watches one event loop from a thread of its own."""

    def __init__(self, threshold_seconds: float, task_code: dict[CodeType, str]) -> None:
        self._threshold = threshold_seconds
        self._task_code = task_code  # code object of each registered task function -> task name
        self._last_tick = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.stalls = 0

    def start(self) -> None:
        """Call from the loop's own thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="relay-stall-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        if self._loop is not None and not self._stop.is_set():
            self._loop.call_later(TICK_SECONDS, self._tick)

    def _watch(self) -> None:
        reported: float | None = None
        while not self._stop.wait(TICK_SECONDS):
            blocked = time.monotonic() - self._last_tick
            if blocked >= self._threshold and reported is None:
                reported = self._last_tick
                self.stalls += 1
                culprit = self._culprit()
                logger.warning(
                    "the event loop has been blocked for %.1fs by %s; every other task on this worker is frozen "
                    "meanwhile. Await instead of blocking, or make it a plain `def` task (it then runs in a thread)",
                    blocked,
                    culprit,
                )
            elif reported is not None and self._last_tick > reported:
                logger.warning("the event loop is free again after %.1fs", self._last_tick - reported)
                reported = None

    def _culprit(self) -> str:
        frame: FrameType | None = sys._current_frames().get(self._loop_thread)
        where = "unknown code"
        while frame is not None:
            name = self._task_code.get(frame.f_code)
            if name is not None:
                context = frame.f_locals.get(frame.f_code.co_varnames[0]) if frame.f_code.co_argcount else None
                task_id = getattr(context, "id", "?")
                return f"task {name} (id {task_id}) at {frame.f_code.co_filename}:{frame.f_lineno}"
            if where == "unknown code":
                where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
            frame = frame.f_back
        return where
