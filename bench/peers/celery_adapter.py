"""Celery in the peers benchmark (its own virtualenv): ``delay`` and ``AsyncResult.get``.

Two systems, as in issue #13: the prefork pool with 2 processes (one per core) and the thread pool with
10 threads. The Redis result backend delivers results over pub/sub, so ``get`` does not poll: each
``delay`` subscribes to its result's channel, and dropping the ``AsyncResult`` (as the preload does)
unsubscribes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.peers.client import Target, ThreadedClient
from bench.peers.spec import EVERYTHING, EXPECTED_RESULT, Profile, Ready, System, Variant, process_env

DEFAULTS = Variant("defaults", "`delay().get()` (pub/sub, no polling)")


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
        ready=Ready(marker="bench worker ready", command="brpop"),
        probe=lambda ref: ("EXISTS", f"celery-task-meta-{ref}"),
        done=lambda reply: bool(reply),
        profiles=(Profile("defaults", {}, EVERYTHING, (DEFAULTS,), load_variant=DEFAULTS.name),),
        note=f"--pool {pool} -c {concurrency}, defaults",
    )


PREFORK = _system("celery-prefork", "Celery, prefork -c 2", "prefork", 2)
THREADS = _system("celery-threads", "Celery, threads -c 10", "threads", 10)


class Client(ThreadedClient):
    def __init__(self, target: Target) -> None:
        super().__init__()
        from bench.peers.apps.celery_app import app, echo

        self.app, self.echo = app, echo

    async def open(self) -> None:
        await self.in_thread(self.app.backend.client.ping)

    async def preload(self, n: int) -> list[str]:
        ids: list[str] = await self.in_thread(self._preload, n)
        return ids

    def _preload(self, n: int) -> list[str]:
        return [self.echo.delay(message="hello").id for _ in range(n)]

    async def verify(self, refs: list[str]) -> tuple[int, list[str]]:
        outcome: tuple[int, list[str]] = await self.in_thread(self._verify, refs)
        return outcome

    def _verify(self, refs: list[str]) -> tuple[int, list[str]]:
        good, bad = 0, []
        for ref in refs:
            meta = self.app.backend.get_task_meta(ref)
            if meta["status"] == "SUCCESS" and meta["result"] == EXPECTED_RESULT:
                good += 1
            else:
                bad.append(ref)
        return good, bad[:5]

    def round_trip(self, variant: str) -> None:
        result = self.echo.delay(message="hello").get(timeout=30)
        if result != EXPECTED_RESULT:
            raise RuntimeError(f"unexpected result {result!r}")
