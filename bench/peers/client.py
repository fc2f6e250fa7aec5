"""The client process of one system: ``python -m bench.peers.client <adapter module> <target JSON>``.

It runs in that system's virtualenv, opens the adapter's ``Client`` once, then answers one JSON request
per stdin line with one JSON line: ``preload`` (of one workload's task), ``verify``, ``warm``, ``round_trip``
(sequential submit -> result latencies, back to back or each after a random pause), ``load`` (several
concurrent clients; the Redis commands they and the workers caused, measured here around the run so that
start-up and warm-up are not counted) and ``chain`` (chains of N steps one after another, their Redis
commands counted the same way, then several at once). The protocol has stdout to itself: anything a library
prints goes to stderr (the runner's log file).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from bench.peers import redisstats


@dataclass(frozen=True)
class Target:
    """Where the system under test listens."""

    redis_url: str
    api_url: str | None = None


class Client(Protocol):
    """What each adapter's ``Client(target)`` provides."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def preload(self, n: int, task: str) -> list[str]: ...
    async def verify(self, refs: list[str]) -> tuple[int, list[str]]: ...
    async def submit_and_wait(self, variant: str) -> float: ...
    async def timed_chain(self, variant: str, steps: int) -> float: ...
    def set_concurrency(self, clients: int) -> None: ...


class AsyncClient:
    """Base for asyncio clients: concurrent callers share the client and its connection pool."""

    def set_concurrency(self, clients: int) -> None:
        """Nothing to do: coroutines need no threads."""

    async def timed_chain(self, variant: str, steps: int) -> float:
        start = time.perf_counter()
        await self.chain(variant, steps)
        return time.perf_counter() - start

    async def chain(self, variant: str, steps: int) -> None:
        """Run one chain of ``steps`` steps (``variant``: a native chain, or ``SINGLES``) and check it returned
        ``steps``; only the systems with ``chains`` implement it."""
        raise NotImplementedError


class ThreadedClient:
    """Base for blocking clients (Celery's, an HTTP stream): each concurrent caller gets its own thread and
    its own thread-local connections; the latency is measured inside that thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1)
        self.local = threading.local()

    def set_concurrency(self, clients: int) -> None:
        self._pool.shutdown(wait=True)
        self._pool = ThreadPoolExecutor(max_workers=clients)

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def submit_and_wait(self, variant: str) -> float:
        result: float = await self.in_thread(self.timed_round_trip, variant)
        return result

    def timed_round_trip(self, variant: str) -> float:
        start = time.perf_counter()
        self.round_trip(variant)
        return time.perf_counter() - start

    def round_trip(self, variant: str) -> None:
        raise NotImplementedError

    async def timed_chain(self, variant: str, steps: int) -> float:
        result: float = await self.in_thread(self._timed_chain, variant, steps)
        return result

    def _timed_chain(self, variant: str, steps: int) -> float:
        start = time.perf_counter()
        self.chain(variant, steps)
        return time.perf_counter() - start

    def chain(self, variant: str, steps: int) -> None:
        """As ``AsyncClient.chain``, in the caller's thread."""
        raise NotImplementedError

    async def close(self) -> None:
        self._pool.shutdown(wait=True)


async def _repeat(client: Client, variant: str, n: int, max_pause: float = 0.0) -> list[float]:
    """Milliseconds of ``n`` sequential round trips; with ``max_pause``, each after a pause drawn uniformly from
    0 to ``max_pause`` seconds (random arrival: the API and worker are idle when each submit arrives)."""
    ms = []
    for _ in range(n):
        if max_pause > 0:
            await asyncio.sleep(random.uniform(0, max_pause))
        ms.append(await client.submit_and_wait(variant) * 1000)
    return ms


async def _load(client: Client, target: Target, variant: str, n: int, clients: int) -> dict[str, Any]:
    """``n`` submit -> result round trips from ``clients`` concurrent callers, and the Redis calls they cost."""
    client.set_concurrency(clients)
    await _repeat(client, variant, 2)  # every new thread/connection warmed before the window opens
    await asyncio.gather(*(client.submit_and_wait(variant) for _ in range(clients)))
    stats = redis.Redis.from_url(target.redis_url)
    remaining = n

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.submit_and_wait(variant)

    try:
        before = redisstats.snapshot(stats)
        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(clients)))
        seconds = time.perf_counter() - start
        calls = redisstats.delta(before, redisstats.snapshot(stats), redisstats.INFO_ONCE)
    finally:
        stats.close()
    return {"tasks": n, "clients": clients, "seconds": seconds, "calls": calls}


async def _chains(client: Client, target: Target, variant: str, steps: int, n: int, at_once: int) -> dict[str, Any]:
    """``n`` chains of ``steps`` steps one after another (ms each) and the Redis commands they cost, then
    ``at_once`` chains started together (seconds until the last ended).

    The chains one after another run on one client thread whose connections the warm-up chain opened, for
    every variant alike: left with the ``at_once`` (or ``load``) threads, one call after another would go to
    thread after thread, each on its own connection, and Relay's streamed chains of 10 then took about
    30 ms instead of 12 (each HTTP connection idle through the other threads' calls; Redis clients hardly
    notice)."""
    client.set_concurrency(1)
    await client.timed_chain(variant, steps)  # warm: connections, scripts, the chain's code paths
    stats = redis.Redis.from_url(target.redis_url)
    try:
        before = redisstats.snapshot(stats)
        ms = [await client.timed_chain(variant, steps) * 1000 for _ in range(n)]
        calls = redisstats.delta(before, redisstats.snapshot(stats), redisstats.INFO_ONCE)
    finally:
        stats.close()
    seconds = 0.0
    if at_once > 0:
        client.set_concurrency(at_once)
        await asyncio.gather(*(client.timed_chain(variant, 2) for _ in range(at_once)))  # every new thread warmed
        start = time.perf_counter()
        await asyncio.gather(*(client.timed_chain(variant, steps) for _ in range(at_once)))
        seconds = time.perf_counter() - start
    return {"ms": ms, "calls": calls, "at_once_seconds": seconds}


async def _serve(
    client: Client, target: Target, requests: asyncio.Queue[str | None], reply: Callable[[Any], None]
) -> None:
    ops: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "preload": lambda r: client.preload(r["n"], r["task"]),
        "verify": lambda r: client.verify(r["refs"]),
        "warm": lambda r: _repeat(client, r["variant"], r["n"]),
        "round_trip": lambda r: _repeat(client, r["variant"], r["n"], r["max_pause"]),
        "load": lambda r: _load(client, target, r["variant"], r["n"], r["clients"]),
        "chain": lambda r: _chains(client, target, r["variant"], r["steps"], r["n"], r["at_once"]),
    }
    while (line := await requests.get()) is not None:
        request = json.loads(line)
        if request["op"] == "quit":
            return
        try:
            reply({"ok": await ops[request["op"]](request)})
        except Exception:  # the runner shows it and stops this block; the process stays usable
            reply({"error": traceback.format_exc()})


async def main(adapter: str, target: Target) -> None:
    protocol = os.fdopen(os.dup(1), "w")  # our replies; libraries that print reach stderr instead
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    client: Client = importlib.import_module(adapter).Client(target)
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(requests.put_nowait, line)
        loop.call_soon_threadsafe(requests.put_nowait, None)

    def reply(message: Any) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    threading.Thread(target=read_stdin, daemon=True).start()
    await client.open()
    reply({"ok": "ready"})
    try:
        await _serve(client, target, requests, reply)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Target(**json.loads(sys.argv[2]))))
