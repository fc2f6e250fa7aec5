"""streaq 7 in the peers benchmark (its own virtualenv): ``task.enqueue`` and ``Task.result``, on coredis.

streaq keeps its queue in a Redis stream: the worker blocks in XREADGROUP (and moves delayed tasks every
0.5 s), and ``Task.result()`` subscribes to the task's channel, so neither polls. But leaving coredis 6.9's
``PubSub`` context (which ``Task.result()`` does once the result is in) always takes its
``unsubscription_timeout``, 0.1 s: its clean-up reads push messages until that timeout cancels it. So
``Task.result()`` takes about 100 ms more than the task (streaq 7.2 needs coredis >= 6.9), and is measured
like the clients that poll every 0.2 s or more at their defaults (fewer requests). The ``tuned`` variant,
in the summary, waits the way the tuned polling peers do: ``GET`` of the result key every 2 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bench.peers.apps import READY
from bench.peers.client import AsyncClient, Target
from bench.peers.spec import EVERYTHING, EXPECTED_RESULT, SINGLES, Profile, Ready, System, Variant, process_env

QUEUE_NAME = "bench"
RESULTS_KEY = f"streaq:{QUEUE_NAME}:task:results:"  # streaq's REDIS_PREFIX + queue + REDIS_RESULT; checked in open()
PRELOAD_BATCH = 200
TUNED = Variant("tuned", "result key polled with `GET` every 2 ms")
NATIVE = Variant("defaults", "`await task.result()` (pub/sub; leaving coredis's PubSub takes 0.1 s)", short=True)
POLL = 0.002
PIPELINE = Variant("pipeline", "`await (step.enqueue(0) | step | ...)`, the last step's result key polled every 2 ms")

SYSTEM = System(
    name="streaq",
    label="streaq",
    venv="peers",
    adapter=__name__,
    worker_argv=lambda bin_: [str(bin_ / "streaq"), "run", "bench.peers.apps.streaq_app:worker"],
    worker_env=process_env,
    ready=Ready(marker=READY, command="xreadgroup"),
    probe=lambda ref: ("EXISTS", RESULTS_KEY + ref),
    done=lambda reply: bool(reply),
    profiles=(Profile("defaults", {}, EVERYTHING, (TUNED, NATIVE), load_variant=TUNED.name),),
    note="1 worker process, concurrency 10 (default 16), JSON (not pickle), otherwise defaults",
    chains=(PIPELINE,),
)


class Client(AsyncClient):
    """The app's own ``Worker`` object, entered as streaq's clients do (it connects and loads the Lua library)."""

    def __init__(self, target: Target) -> None:
        from bench.peers.apps.streaq_app import echo, echo_await, step, worker

        self.worker, self.echo, self.step = worker, echo, step
        self.tasks: dict[str, Any] = {"echo": echo, "echo_await": echo_await}
        self.stack = contextlib.AsyncExitStack()

    async def open(self) -> None:
        await self.stack.enter_async_context(self.worker)
        if self.worker.results_key != RESULTS_KEY:
            raise RuntimeError(f"streaq's result keys moved: {self.worker.results_key!r}, not {RESULTS_KEY!r}")

    async def close(self) -> None:
        await self.stack.aclose()

    async def preload(self, n: int, task: str) -> list[str]:
        ids: list[str] = []
        for start in range(0, n, PRELOAD_BATCH):
            batch = [self.tasks[task].enqueue(message="hello") for _ in range(start, min(n, start + PRELOAD_BATCH))]
            await self.worker.enqueue_many(batch)  # streaq's own batch enqueue: one pipeline
            ids += [t.id for t in batch]
        return ids

    async def verify(self, refs: list[str]) -> tuple[int, list[str]]:
        good, bad = 0, []
        for start in range(0, len(refs), 1000):
            chunk = refs[start : start + 1000]
            raws = await self.worker.redis.mget([RESULTS_KEY + ref for ref in chunk])
            for ref, raw in zip(chunk, raws, strict=True):
                data = await self.worker.deserialize(raw) if raw is not None else None
                if data and data["s"] and data["r"] == EXPECTED_RESULT:
                    good += 1
                else:
                    bad.append(ref)
        return good, bad[:5]

    async def submit_and_wait(self, variant: str) -> float:
        start = time.perf_counter()
        task = await self.echo.enqueue(message="hello")
        if variant == NATIVE.name:
            value = (await task.result(timeout=30)).result  # raises if the task failed
        else:
            value = await self._poll(task.id)
        elapsed = time.perf_counter() - start
        if value != EXPECTED_RESULT:
            raise RuntimeError(f"unexpected result {value!r}")
        return elapsed

    async def _poll(self, task_id: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while (raw := await self.worker.redis.get(RESULTS_KEY + task_id)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result for streaq task {task_id} after {timeout}s")
            await asyncio.sleep(POLL)
        data = await self.worker.deserialize(raw)
        if not data["s"]:
            raise RuntimeError(f"the task failed: {data['r']}")
        return data["r"]

    async def chain(self, variant: str, steps: int) -> None:
        """A pipeline (``|``: each task enqueued with the one before it as a dependency, its result as the
        argument), or single submits; each result read as the ``tuned`` variant reads it."""
        if variant == PIPELINE.name:
            last = self.step.enqueue(0)
            for _ in range(steps - 1):
                last = last | self.step
            await last  # enqueues the whole pipeline in one transaction
            value = await self._poll(last.id, timeout=120)
        elif variant == SINGLES:
            value = 0
            for _ in range(steps):
                value = await self._poll((await self.step.enqueue(value)).id)
        else:
            raise ValueError(f"unknown chain variant {variant!r}")
        if value != steps:
            raise RuntimeError(f"a chain of {steps} steps returned {value!r}")
