"""Celery in the peers benchmark (its own virtualenv): ``send_task`` (what ``delay`` calls) and ``AsyncResult.get``.

Two systems, as in issue #13: the prefork pool with 2 processes (one per core) and the thread pool with
10 threads. The Redis result backend delivers results over pub/sub, so ``get`` does not poll: each
``send_task`` subscribes to its result's channel, and dropping the ``AsyncResult`` (as the preload does)
unsubscribes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.peers.apps import READY
from bench.peers.client import Target, ThreadedClient
from bench.peers.spec import (
    CHAIN_TASK,
    EVERYTHING,
    EXPECTED_RESULT,
    SINGLES,
    Profile,
    Ready,
    System,
    Variant,
    process_env,
)

DEFAULTS = Variant("defaults", "`send_task().get()` (pub/sub, no polling)")
CHAIN = Variant("chain", "`chain(step.s(0), step.s(), ...).apply_async().get()`")


def _argv(pool: str, concurrency: int) -> Callable[[Path], list[str]]:
    def argv(bin_: Path) -> list[str]:
        app = ("-A", "bench.peers.apps.celery_app")
        return [str(bin_ / "celery"), *app, "worker", "--pool", pool, "-c", str(concurrency)]

    return argv


def _system(name: str, label: str, pool: str, concurrency: int) -> System:
    return System(
        name=name,
        label=label,
        venv="peers",
        adapter=__name__,
        worker_argv=_argv(pool, concurrency),
        worker_env=process_env,
        ready=Ready(marker=READY, command="brpop"),
        probe=lambda ref: ("EXISTS", f"celery-task-meta-{ref}"),
        done=lambda reply: bool(reply),
        profiles=(Profile("defaults", {}, EVERYTHING, (DEFAULTS,), load_variant=DEFAULTS.name),),
        note=f"--pool {pool} -c {concurrency}, defaults",
        awaits="`time.sleep(0)` (a Celery task cannot await: one yield of the CPU and the GIL)",
        chains=(CHAIN,),
    )


PREFORK = _system("celery-prefork", "Celery, prefork -c 2", "prefork", 2)
THREADS = _system("celery-threads", "Celery, threads -c 10", "threads", 10)


class Client(ThreadedClient):
    """Each client thread has its own Celery app (see ``make_app``) and sends ``echo`` by name, which is what
    ``echo.delay`` does underneath. Every ``AsyncResult`` is released explicitly (see ``_release``)."""

    def __init__(self, target: Target) -> None:
        super().__init__()
        from bench.peers.apps.celery_app import make_app

        self.make_app = make_app
        _install_orphans()

    def app(self) -> Any:
        app = getattr(self.local, "app", None)
        if app is None:
            app = self.local.app = self.make_app()
        return app

    async def open(self) -> None:
        await self.in_thread(lambda: self.app().backend.client.ping())

    async def preload(self, n: int, task: str) -> list[str]:
        ids: list[str] = await self.in_thread(self._preload, n, task)
        return ids

    def _preload(self, n: int, task: str) -> list[str]:
        app = self.app()
        ids = []
        for _ in range(n):
            result = app.send_task(task, kwargs={"message": "hello"})
            ids.append(result.id)
            result.backend.remove_pending_result(result)  # unsubscribes, as dropping it would (see _release)
            _release(result)
        return ids

    async def verify(self, refs: list[str]) -> tuple[int, list[str]]:
        outcome: tuple[int, list[str]] = await self.in_thread(self._verify, refs)
        return outcome

    def _verify(self, refs: list[str]) -> tuple[int, list[str]]:
        backend = self.app().backend
        good, bad = 0, []
        for ref in refs:
            meta = backend.get_task_meta(ref)
            if meta["status"] == "SUCCESS" and meta["result"] == EXPECTED_RESULT:
                good += 1
            else:
                bad.append(ref)
        return good, bad[:5]

    def round_trip(self, variant: str) -> None:
        result = self.app().send_task("echo", kwargs={"message": "hello"})
        value = result.get(timeout=30)  # unsubscribes from the result's channel once it arrives
        _release(result)
        if value != EXPECTED_RESULT:
            raise RuntimeError(f"unexpected result {value!r}")

    def chain(self, variant: str, steps: int) -> None:
        app = self.app()
        _ORPHANS.settle(app.backend)  # a safe point: no pub/sub call of this thread's is under way
        if variant == CHAIN.name:
            from celery import chain

            signatures = [app.signature(CHAIN_TASK, args=(0,)), *(app.signature(CHAIN_TASK) for _ in range(steps - 1))]
            result = chain(*signatures).apply_async()  # the last step's result; .parent leads back to the first
            value = result.get(timeout=120)
            del result  # it and its parents are orphans now; the first step's channel is unsubscribed below
            _ORPHANS.settle(app.backend)
        elif variant == SINGLES:
            value = 0
            for _ in range(steps):
                result = app.send_task(CHAIN_TASK, args=(value,))
                value = result.get(timeout=30)
                _release(result)
        else:
            raise ValueError(f"unknown chain variant {variant!r}")
        if value != steps:
            raise RuntimeError(f"a chain of {steps} steps returned {value!r}")


class _Orphans:
    """Results dropped without ``_release``, unsubscribed later at a safe point (``settle``).

    A chain's ``apply_async`` makes an ``AsyncResult`` per step (and subscribes to the first one's channel);
    when the garbage collector drops one in the middle of the next SUBSCRIBE, Celery 5.6's ``__del__``
    deadlocks the client (celery/celery#10477, see ``_release``; the benchmark hit it within a few hundred
    chains). So ``__del__`` only notes the result here, and the thread that owns its backend unsubscribes from
    what it still follows before its next chain: Celery 5.7's fix, done by the benchmark's client. Channels it
    never subscribed to are not unsubscribed (5.6's ``__del__`` would send an UNSUBSCRIBE for each)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: dict[int, list[str]] = {}

    def note(self, result: Any) -> None:
        backend = getattr(result, "backend", None)
        if backend is not None:
            with self.lock:
                self.ids.setdefault(id(backend), []).append(result.id)

    def settle(self, backend: Any) -> None:
        with self.lock:
            ids = self.ids.pop(id(backend), [])
        consumer = backend.result_consumer
        for task_id in ids:
            backend._remove_pending_result(task_id)
            if backend.get_key_for_task(task_id) in consumer.subscribed_to:
                consumer.cancel_for(task_id)


_ORPHANS = _Orphans()


def _install_orphans() -> None:
    from celery.result import AsyncResult

    def note(result: Any) -> None:  # a function, so that it binds as a method
        _ORPHANS.note(result)

    AsyncResult.__del__ = note  # type: ignore[method-assign]


def _release(result: Any) -> None:
    """Stop ``result``'s finalizer from unsubscribing (again). In Celery 5.6, ``AsyncResult.__del__`` always
    sends UNSUBSCRIBE; when the garbage collector runs it in the middle of the next SUBSCRIBE, it re-enters
    redis-py's PubSub lock and the client deadlocks for good (celery/celery#10477, which this benchmark hit;
    fixed in Celery 5.7, whose kombu needs redis-py 6). Doing the unsubscribing at a safe point, once, is
    what 5.7 does."""
    result.backend = None
