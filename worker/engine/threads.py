"""The threads that run plain ``def`` tasks: daemon threads, so a task that cannot be interrupted never keeps
a stopping worker alive."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class TaskThreads:
    """The threads that run plain ``def`` tasks, at most ``size`` at once.

    Daemon threads, unlike ``ThreadPoolExecutor``'s (which the interpreter joins at exit): Python cannot
    interrupt a task's thread, and one that ignores ``task.cancelled`` must not keep a stopping worker alive
    once its job is re-queued. Each thread's current task is known, so the worker can say what it leaves behind.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._work: queue.SimpleQueue[tuple[Future[Any], tuple[str, str], Callable[[], Any]] | None]
        self._work = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._busy: dict[int, tuple[str, str]] = {}  # thread ident -> (task id, task name)

    def run(self, task: tuple[str, str], call: Callable[[], T]) -> Future[T]:
        """Run ``call`` for ``task`` (its id and name) on a free thread, or once one is free."""
        future: Future[T] = Future()
        with self._lock:
            self._work.put((future, task, call))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._size:
                thread = threading.Thread(target=self._serve, name=f"relay-task_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def stop(self) -> list[tuple[str, str]]:
        """Cancel what has not started, let idle threads end, and return the tasks still running (abandoned)."""
        with self._lock:
            with contextlib.suppress(queue.Empty):
                while (item := self._work.get_nowait()) is not None:
                    item[0].cancel()
            for _ in self._threads:
                self._work.put(None)
        return list(self._busy.values())

    def _serve(self) -> None:
        me = threading.get_ident()
        while (item := self._work.get()) is not None:
            future, task, call = item
            if future.set_running_or_notify_cancel():
                self._busy[me] = task
                try:
                    future.set_result(call())
                except BaseException as exc:  # as ThreadPoolExecutor does: the awaiting run gets it
                    future.set_exception(exc)
                finally:
                    del self._busy[me]
            self._idle.release()
