"""Dramatiq 2 in the peers benchmark (its own virtualenv): ``actor.send`` and ``Message.get_result(block=True)``.

Dramatiq's Redis consumer polls: an idle one waits longer after each empty fetch, up to the worker timeout
(``dramatiq_worker_timeout``, 1000 ms by default; ``dramatiq-tuned`` sets 10 ms). The results backend
needs no polling: ``get_result(block=True)`` blocks in BRPOPLPUSH on the result's list. Two systems, so that
both worker timeouts get every measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.peers.apps import READY
from bench.peers.client import Target, ThreadedClient
from bench.peers.spec import (
    EVERYTHING,
    EXPECTED_RESULT,
    SINGLES,
    Profile,
    Ready,
    System,
    Variant,
    process_env,
)

QUEUE_NAME = "bench"
DEFAULTS = Variant("defaults", "`actor.send().get_result(block=True)` (BRPOPLPUSH, no polling)")
PIPELINE = Variant("pipeline", "`pipeline([step.message(0), step.message(), ...]).run().get_result(block=True)`")


def _env(worker_timeout_ms: int | None) -> Callable[[str], dict[str, str]]:
    def env(redis_url: str) -> dict[str, str]:
        timeout = {} if worker_timeout_ms is None else {"dramatiq_worker_timeout": str(worker_timeout_ms)}
        return process_env(redis_url) | timeout

    return env


def _system(name: str, label: str, worker_timeout_ms: int | None) -> System:
    return System(
        name=name,
        label=label,
        venv="peers",
        adapter=__name__,
        worker_argv=lambda bin_: [
            *(str(bin_ / "dramatiq"), "bench.peers.apps.dramatiq_app:broker"),
            *("--processes", "1", "--threads", "10"),
        ],
        worker_env=_env(worker_timeout_ms),
        ready=Ready(marker=READY),  # its consumer polls: no blocked command to wait for
        probe=lambda ref: ("EXISTS", ref),  # the ref is the result's key
        done=lambda reply: bool(reply),
        profiles=(Profile("defaults", {}, EVERYTHING, (DEFAULTS,), load_variant=DEFAULTS.name),),
        note="Redis broker and results backend, 1 process, 10 threads, "
        + (
            "defaults (worker timeout 1000 ms)"
            if worker_timeout_ms is None
            else f"worker timeout {worker_timeout_ms} ms"
        ),
        awaits="an async actor, `await asyncio.sleep(0)` (Dramatiq's `AsyncIO` middleware)",
        chains=(PIPELINE,),
    )


DEFAULT = _system("dramatiq", "Dramatiq", None)
TUNED = _system("dramatiq-tuned", "Dramatiq, worker timeout 10 ms", 10)


class Client(ThreadedClient):
    """The app's broker (redis-py's pool is shared by the client threads) and its results backend."""

    def __init__(self, target: Target) -> None:
        super().__init__()
        from bench.peers.apps.dramatiq_app import backend, broker, echo, echo_await, step

        self.broker, self.backend, self.echo, self.step = broker, backend, echo, step
        self.actors: dict[str, Any] = {"echo": echo, "echo_await": echo_await}

    async def open(self) -> None:
        await self.in_thread(self.backend.client.ping)

    async def close(self) -> None:
        await super().close()
        self.broker.close()

    async def preload(self, n: int, task: str) -> list[str]:
        keys: list[str] = await self.in_thread(self._preload, n, task)
        return keys

    def _preload(self, n: int, task: str) -> list[str]:
        actor = self.actors[task]
        return [self.backend.build_message_key(actor.send(message="hello")) for _ in range(n)]

    async def verify(self, refs: list[str]) -> tuple[int, list[str]]:
        outcome: tuple[int, list[str]] = await self.in_thread(self._verify, refs)
        return outcome

    def _verify(self, refs: list[str]) -> tuple[int, list[str]]:
        good, bad = 0, []
        for start in range(0, len(refs), 1000):
            chunk = refs[start : start + 1000]
            pipe = self.backend.client.pipeline(transaction=False)
            for key in chunk:
                pipe.lindex(key, 0)
            for key, raw in zip(chunk, pipe.execute(), strict=True):
                try:
                    value = self.backend.unwrap_result(self.backend.encoder.decode(raw)) if raw else None
                except Exception:  # a stored failure: unwrap_result raises it
                    value = None
                if value == EXPECTED_RESULT:
                    good += 1
                else:
                    bad.append(key)
        return good, bad[:5]

    def round_trip(self, variant: str) -> None:
        value = self.echo.send(message="hello").get_result(block=True, timeout=30_000)
        if value != EXPECTED_RESULT:
            raise RuntimeError(f"unexpected result {value!r}")

    def chain(self, variant: str, steps: int) -> None:
        if variant == PIPELINE.name:
            import dramatiq

            messages = [self.step.message(0), *(self.step.message() for _ in range(steps - 1))]
            value = dramatiq.pipeline(messages).run().get_result(block=True, timeout=120_000)  # the last step's
        elif variant == SINGLES:
            value = 0
            for _ in range(steps):
                value = self.step.send(value).get_result(block=True, timeout=30_000)
        else:
            raise ValueError(f"unknown chain variant {variant!r}")
        if value != steps:
            raise RuntimeError(f"a chain of {steps} steps returned {value!r}")
