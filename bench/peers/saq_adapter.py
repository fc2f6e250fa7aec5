"""SAQ in the peers benchmark (its own virtualenv): native ``enqueue`` and ``apply``.

SAQ's worker claims jobs with BLMOVE (no polling); ``apply`` polls the job's status, every 0.5 s by
default (``tuned``: every 2 ms).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.peers.apps import READY
from bench.peers.client import AsyncClient, Target
from bench.peers.spec import EVERYTHING, EXPECTED_RESULT, Profile, Ready, System, Variant, process_env

QUEUE_NAME = "bench"
PRELOAD_BATCH = 200
TUNED = Variant("tuned", "`queue.apply(poll_interval=0.002)`")
DEFAULTS = Variant("defaults", "`queue.apply()` polls every 0.5 s", short=True)
POLL = {TUNED.name: 0.002, DEFAULTS.name: 0.5}

SYSTEM = System(
    name="saq",
    label="SAQ",
    venv="peers",
    adapter=__name__,
    worker_argv=lambda bin_: [str(bin_ / "saq"), "bench.peers.apps.saq_app.settings"],
    worker_env=process_env,
    ready=Ready(marker=READY, command="blmove", clients=10),
    # a finished job leaves the queue's ``incomplete`` sorted set
    probe=lambda ref: ("ZSCORE", f"saq:{QUEUE_NAME}:incomplete", f"saq:job:{QUEUE_NAME}:{ref}"),
    done=lambda reply: reply is None,
    profiles=(Profile("defaults", {}, EVERYTHING, (TUNED, DEFAULTS), load_variant=TUNED.name),),
    note="concurrency 10, defaults",
)


class Client(AsyncClient):
    def __init__(self, target: Target) -> None:
        from saq import Queue

        self.queue = Queue.from_url(target.redis_url, name=QUEUE_NAME)

    async def open(self) -> None:
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def preload(self, n: int, task: str) -> list[str]:
        keys: list[str] = []
        for start in range(0, n, PRELOAD_BATCH):
            count = min(n, start + PRELOAD_BATCH) - start
            jobs = await asyncio.gather(*(self.queue.enqueue(task, message="hello") for _ in range(count)))
            if None in jobs:
                raise RuntimeError("SAQ refused an enqueue (job key exists)")
            keys += [job.key for job in jobs if job is not None]
        return keys

    async def verify(self, refs: list[str]) -> tuple[int, list[str]]:
        from saq.job import Status

        good, bad = 0, []
        for start in range(0, len(refs), 1000):
            chunk = refs[start : start + 1000]
            for ref, job in zip(chunk, await self.queue.jobs(chunk), strict=True):
                if job is not None and job.status == Status.COMPLETE and job.result == EXPECTED_RESULT:
                    good += 1
                else:
                    bad.append(ref)
        return good, bad[:5]

    async def submit_and_wait(self, variant: str) -> float:
        start = time.perf_counter()
        result: Any = await self.queue.apply("echo", poll_interval=POLL[variant], message="hello")
        elapsed = time.perf_counter() - start
        if result != EXPECTED_RESULT:
            raise RuntimeError(f"unexpected result {result!r}")
        return elapsed
