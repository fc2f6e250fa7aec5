"""taskiq + taskiq-redis in the peers benchmark (its own virtualenv): ``echo.kiq`` and ``wait_result``.

The list broker's worker blocks in BRPOP (no polling); ``wait_result`` polls the result backend, every
0.2 s by default (``tuned``: every 2 ms).
"""

from __future__ import annotations

import asyncio
import time

from bench.peers.apps import READY
from bench.peers.client import AsyncClient, Target
from bench.peers.spec import EVERYTHING, EXPECTED_RESULT, Profile, Ready, System, Variant, process_env

PRELOAD_BATCH = 200
TUNED = Variant("tuned", "`wait_result(check_interval=0.002)`")
DEFAULTS = Variant("defaults", "`wait_result()` polls every 0.2 s", short=True)
POLL = {TUNED.name: 0.002, DEFAULTS.name: 0.2}

SYSTEM = System(
    name="taskiq",
    label="taskiq + taskiq-redis",
    venv="peers",
    adapter=__name__,
    worker_argv=lambda bin_: [
        *(str(bin_ / "taskiq"), "worker", "bench.peers.apps.taskiq_app:broker"),
        *("--workers", "1", "--max-async-tasks", "10"),
    ],
    worker_env=process_env,
    ready=Ready(marker=READY, command="brpop"),
    probe=lambda ref: ("EXISTS", ref),  # the result backend's key is the task id
    done=lambda reply: bool(reply),
    profiles=(Profile("defaults", {}, EVERYTHING, (TUNED, DEFAULTS), load_variant=TUNED.name),),
    note="ListQueueBroker, 1 worker process, --max-async-tasks 10, JSON results",
)


class Client(AsyncClient):
    def __init__(self, target: Target) -> None:
        from bench.peers.apps.taskiq_app import broker, echo, echo_await

        self.broker, self.echo = broker, echo
        self.tasks = {"echo": echo, "echo_await": echo_await}

    async def open(self) -> None:
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def preload(self, n: int, task: str) -> list[str]:
        ids: list[str] = []
        for start in range(0, n, PRELOAD_BATCH):
            count = min(n, start + PRELOAD_BATCH) - start
            kicked = await asyncio.gather(*(self.tasks[task].kiq(message="hello") for _ in range(count)))
            ids += [sent.task_id for sent in kicked]
        return ids

    async def verify(self, refs: list[str]) -> tuple[int, list[str]]:
        good, bad = 0, []
        backend = self.broker.result_backend
        for start in range(0, len(refs), 100):
            chunk = refs[start : start + 100]
            results = await asyncio.gather(*(backend.get_result(ref) for ref in chunk), return_exceptions=True)
            for ref, result in zip(chunk, results, strict=True):
                if (
                    not isinstance(result, BaseException)
                    and not result.is_err
                    and result.return_value == EXPECTED_RESULT
                ):
                    good += 1
                else:
                    bad.append(ref)
        return good, bad[:5]

    async def submit_and_wait(self, variant: str) -> float:
        start = time.perf_counter()
        task = await self.echo.kiq(message="hello")
        result = await task.wait_result(check_interval=POLL[variant], timeout=30)
        elapsed = time.perf_counter() - start
        if result.is_err or result.return_value != EXPECTED_RESULT:
            raise RuntimeError(f"unexpected result {result!r}")
        return elapsed
