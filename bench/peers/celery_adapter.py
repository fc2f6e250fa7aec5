"""Celery in the peers benchmark (its own virtualenv): ``send_task`` (what ``delay`` calls) and ``AsyncResult.get``.

Two systems, as in issue #13: the prefork pool with 2 processes (one per core) and the thread pool with
10 threads. The Redis result backend delivers results over pub/sub, so ``get`` does not poll: each
``send_task`` subscribes to its result's channel, and dropping the ``AsyncResult`` (as the preload does)
unsubscribes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.peers.apps import READY
from bench.peers.client import Target, ThreadedClient
from bench.peers.spec import EVERYTHING, EXPECTED_RESULT, Profile, Ready, System, Variant, process_env

DEFAULTS = Variant("defaults", "`send_task().get()` (pub/sub, no polling)")


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


def _release(result: Any) -> None:
    """Stop ``result``'s finalizer from unsubscribing (again). In Celery 5.6, ``AsyncResult.__del__`` always
    sends UNSUBSCRIBE; when the garbage collector runs it in the middle of the next SUBSCRIBE, it re-enters
    redis-py's PubSub lock and the client deadlocks for good (celery/celery#10477, which this benchmark hit;
    fixed in Celery 5.7, whose kombu needs redis-py 6). Doing the unsubscribing at a safe point, once, is
    what 5.7 does."""
    result.backend = None
