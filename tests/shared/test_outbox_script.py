"""The reply outbox (``shared/lua/outbox.lua``, ``worker.bridge.replies``): a sender takes due replies, each held
for a while, and settles each one it took only if the entry is still the one it took. A task that ends again
while its reply is being sent (a manual retry's run) is added again, and that entry is the next reply: removed
unconditionally, it was lost. Against the suite's real Redis."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis

from shared import keys
from shared.scripts import Scripts

HOLD_MS = 30_000


async def redis_ms(pool: ArqRedis) -> int:
    seconds, micros = await pool.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def take(pool: ArqRedis, outbox: str) -> list[tuple[str, int]]:
    taken = await Scripts(pool).outbox(keys=[outbox], args=[0, 32, HOLD_MS])
    return [(raw.decode(), int(held)) for raw, held in zip(taken[0::3], taken[2::3], strict=True)]


async def settle(pool: ArqRedis, outbox: str, task_id: str, held: int, delay: int | str = "") -> int:
    return int(await Scripts(pool).outbox(keys=[outbox], args=["settle", task_id, held, delay]))


async def test_a_reply_settled_after_its_task_ended_again_leaves_the_new_entry(pool: ArqRedis) -> None:
    outbox = keys.reply_outbox(f"relay:ob:{uuid.uuid4().hex[:8]}")
    await pool.zadd(outbox, {"t1": await redis_ms(pool)})  # the task ended: its reply is due
    [(task_id, held)] = await take(pool, outbox)
    assert task_id == "t1"
    await pool.zadd(outbox, {"t1": await redis_ms(pool)})  # retried, it ended again while the reply was sent
    assert await settle(pool, outbox, "t1", held) == 0
    [(_, again)] = await take(pool, outbox)  # the second end's reply
    assert await settle(pool, outbox, "t1", again) == 1
    assert await settle(pool, outbox, "t1", again) == 0  # safe to apply twice
    assert await pool.zcard(outbox) == 0


async def test_a_reply_that_failed_is_held_on_redis_clock_then_due_again(pool: ArqRedis) -> None:
    outbox = keys.reply_outbox(f"relay:ob:{uuid.uuid4().hex[:8]}")
    await pool.zadd(outbox, {"t1": await redis_ms(pool)})
    [(_, held)] = await take(pool, outbox)
    before = await redis_ms(pool)
    assert await settle(pool, outbox, "t1", held, 5000) == 1
    score = await pool.zscore(outbox, "t1")
    assert score is not None
    assert before + 5000 <= score <= await redis_ms(pool) + 5000
