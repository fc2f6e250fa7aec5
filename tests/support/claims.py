"""Claims, enqueues and wake-up notices made as Relay's processes make them, by calling the scripts directly: for
the script tests of hand-offs, named claims and watched due times (``shared/keys.py``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from arq.connections import ArqRedis

from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasks import TaskSubmission
from worker.engine.engine import Engine
from worker.tasks import load

TASKS = load(["worker.tasks.demo", "tests.support.tasks"])
REGISTRATION_MS = 5000


class Worker:
    """Claims by calling the script as a worker's engine does, taking hand-offs (or not)."""

    def __init__(self, pool: ArqRedis, settings: Settings, handoffs: bool = True, lease_ms: int = 10_000) -> None:
        self.pool, self.settings, self.scripts = pool, settings, Scripts(pool)
        self.token = f"host:1:{uuid.uuid4().hex[:8]}"
        self.handoffs, self.lease_ms = handoffs, lease_ms
        self.requests = 0
        self.received = 0  # handed jobs popped from its list (``HandoffListener``)
        self.renew = True  # an idle claim renews its registration (the engine skips every other renewal)

    async def claim(self, limit: int) -> tuple[list[str], Any, Any]:
        """Claim up to ``limit``: the ids taken, the swept ids, and the free slots it registered with."""
        return (await self.claim_reply(limit))[:3]

    async def claim_reply(self, limit: int) -> tuple[list[str], Any, Any, Any]:
        """... and Redis's count of the jobs handed to it (when the claim read it)."""
        reply = await self.claim_raw(limit)
        claimed, swept, _, _, _, _, registered, handed, *_ = reply
        return [item[0].decode() for item in claimed], [item[0].decode() for item in swept], registered, handed

    async def claim_raw(self, limit: int) -> list[Any]:
        """claim.lua's whole reply."""
        self.requests += 1
        handoff = f"{REGISTRATION_MS}:{self.received}:1:{int(self.renew)}" if self.handoffs else ""
        args = [str(self.requests), limit, self.lease_ms, self.token, 50, "default", "", handoff]
        queue = self.settings.queue_name
        reply: list[Any] = await self.scripts.claim(
            keys=[queue, keys.ABORT_SET, keys.claim_request(self.token)], args=[*args, *TASKS.claim_entries()]
        )
        return reply

    async def pop(self) -> list[Any] | None:
        raw = await self.pool.lpop(keys.handoff(self.token))  # type: ignore[misc]
        if raw is None:
            return None
        self.received += 1
        item: list[Any] = json.loads(raw)
        return item

    async def registration(self) -> list[str] | None:
        raw = await self.pool.hget(keys.idle_registry(self.settings.queue_name), self.token)  # type: ignore[misc]
        return raw.decode().split("|") if raw else None


class Submitter:
    def __init__(self, pool: ArqRedis, settings: Settings) -> None:
        self.settings = settings
        self.enqueuer = Enqueuer(pool, settings, Scripts(pool))

    async def submit(self, task: str, **fields: Any) -> str:
        prepared = prepare(TASKS.get(task), self.settings, TaskSubmission(task=task, **fields))
        return (await self.enqueuer.enqueue(prepared)).task_id


async def next_notice(pubsub: Any, seconds: float) -> bytes | None:
    """The next wake-up notice within ``seconds``, past the subscription's own confirmation."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            data: bytes = message["data"]
            return data
    return None


def lose_the_reply(engine: Engine, error: BaseException) -> None:
    """Make the engine's next claim run in Redis, then raise ``error`` instead of returning what it claimed."""
    real = engine.scripts.claim
    lost = False

    async def claim(**kwargs: Any) -> Any:
        nonlocal lost
        reply = await real(**kwargs)
        if not lost:
            lost = True
            raise error
        return reply

    engine.scripts.claim = claim  # type: ignore[method-assign]
