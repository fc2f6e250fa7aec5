"""Per-API-key submit quotas, shared by every API process through Redis: a rate limit and a cap on
tasks not yet ended. A submit's checks are one Lua script, one round trip, whichever limits are set. With
both limits off (the default) nothing here touches Redis.

The cap needs no help from workers: each key has a sorted set of its task ids, reserved before the
enqueue and released if the enqueue refuses. Ended tasks are pruned lazily, only when the set looks
full: a task has ended when arq's result key exists, or when its job key is gone (expired, or never
written by a submit that died after reserving: such a reservation is kept for a grace period first,
so a concurrent check cannot prune a task whose enqueue is still on its way).

With several shards (``RELAY_QUEUE_SHARDS`` > 1, shared/keys.py) the key's set and bucket stay in shard 0's slot,
and admission is still one script there (count and add: no two submits both pass the cap), but a script cannot
read the tasks' keys in other slots. So that script prunes nothing; when the set looks full, the API reads the
state of its oldest members in their own shards (one pipeline per shard, bounded), removes those that ended with a
second script on shard 0 (only entries not reserved again meanwhile, the grace judged on Redis's clock), and asks
once more. A member read as live, or not read at all, stays: stale entries make the cap stricter, never looser.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from arq.connections import ArqRedis

from api.errors import ApiError, QuotaExceeded, RateLimited
from api.metrics import ApiMetrics
from shared import keys
from shared.errors import SubmissionError
from shared.settings import Settings

logger = logging.getLogger("relay.api.quotas")

RESERVATION_GRACE_MS = 60_000  # far longer than any submit takes between its reservation and its enqueue
QUOTA_RETRY_AFTER_SECONDS = 5
PRUNE_BATCH = 500  # several shards: the oldest members read per prune (the set holds about RELAY_KEY_MAX_ACTIVE)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# With one shard every task's keys are in the set's slot (one Redis, or the namespace's slot of a cluster), so
# reading job keys named from the set's members, which no caller could declare in advance, is safe.
_PRUNE = """
local function prune(key, grace, job_prefix, result_prefix)
  local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local id = members[i]
    local ended = redis.call('EXISTS', result_prefix .. id) == 1
    if not ended and redis.call('EXISTS', job_prefix .. id) == 0 then
      ended = tonumber(members[i + 1]) < now - grace
    end
    if ended then redis.call('ZREM', key, id) end
  end
  return redis.call('ZCARD', key)
end
"""
# A token bucket on Redis's clock: {admitted, ms until the next token}.
_RATE = """
local function take_token(bucket, rate_per_s, burst)
  local rate = rate_per_s / 1000
  local state = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  if tokens < 1 then return {0, math.ceil((1 - tokens) / rate)} end
  redis.call('HSET', bucket, 'tokens', tostring(tokens - 1), 'ts', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst / rate))
  return {1, 0}
end
"""
# One admission, one round trip: the rate (when ARGV[1] > 0), then a reservation of an active slot (when
# ARGV[4] > 0); a refused rate reserves nothing. KEYS: the key's bucket, the key's set. ARGV: rate per second,
# burst, task id, max active, grace ms, job prefix, result prefix.
# Returns {0, ms until the next token} (rate), or {1, admitted, newly reserved, active count}.
_ADMIT_LUA = (
    _NOW
    + _PRUNE
    + _RATE
    + """
local rate = tonumber(ARGV[1])
if rate > 0 then
  local taken = take_token(KEYS[1], rate, tonumber(ARGV[2]))
  if taken[1] == 0 then return {0, taken[2]} end
end
local max_active = tonumber(ARGV[4])
if max_active <= 0 then return {1, 1, 0, 0} end
local id = ARGV[3]
if redis.call('ZSCORE', KEYS[2], id) then return {1, 1, 0, redis.call('ZCARD', KEYS[2])} end
local count = redis.call('ZCARD', KEYS[2])
if count >= max_active then
  count = prune(KEYS[2], tonumber(ARGV[5]), ARGV[6], ARGV[7])
  if count >= max_active then return {1, 0, 0, count} end
end
redis.call('ZADD', KEYS[2], now, id)
return {1, 1, 1, count + 1}
"""
)
# KEYS: the key's set. ARGV: grace ms, job prefix, result prefix. Returns the active count.
_COUNT_LUA = _NOW + _PRUNE + "return prune(KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3])"
# Several shards: the same admission, but a full set is not pruned here (its tasks' keys are in other slots; the
# caller prunes, see the module's docstring), and a task id admitted again (a retry, a repeated submit) has its
# reservation renewed, so a prune that read it as ended just before keeps it.
_ADMIT_SHARDED_LUA = (
    _NOW
    + "local function prune(key) return redis.call('ZCARD', key) end\n"
    + _RATE
    + _ADMIT_LUA[_ADMIT_LUA.index("local rate = tonumber(ARGV[1])") :].replace(
        "if redis.call('ZSCORE', KEYS[2], id) then return",
        "if redis.call('ZSCORE', KEYS[2], id) then redis.call('ZADD', KEYS[2], 'XX', now, id) return",
    )
)
# Several shards: remove the members the caller read as ended in their shards. KEYS: the key's set. ARGV: grace ms,
# then per member: id, the score it was read with, 1 if its result exists (else its job key was missing: ended only
# once its reservation is older than the grace). A member whose score changed since (reserved again) stays. Safe to
# apply twice. Returns the active count.
_RELEASE_LUA = (
    _NOW
    + """
local grace = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]))
  if score and score == tonumber(ARGV[i + 1]) and (ARGV[i + 2] == '1' or score < now - grace) then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return redis.call('ZCARD', KEYS[1])
"""
)


class _Counted:
    """``Quotas.admit`` with no limit to check: counts a submit that went through (a plain class: a generator-based
    context manager costs more than everything it would do here)."""

    __slots__ = ("_key_name", "_metrics")

    def __init__(self, metrics: ApiMetrics, key_name: str) -> None:
        self._metrics = metrics
        self._key_name = key_name

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self._metrics.key_submitted(self._key_name)


class Quotas:
    """The per-key limits of one API process (its scripts are registered once)."""

    def __init__(self, pool: ArqRedis, settings: Settings, metrics: ApiMetrics, key_names: list[str]) -> None:
        self._pool = pool
        self._queue = settings.queue_name
        self._rate = settings.key_submit_rate
        self._burst = settings.key_submit_burst
        self._max_active = settings.key_max_active
        self._metrics = metrics
        self._key_names = key_names
        self._sharded = settings.queue_shards > 1
        with keys.on_shard(0):  # each call declares shard 0's migration guard (shared.redis)
            self._admit_script = pool.register_script(_ADMIT_SHARDED_LUA if self._sharded else _ADMIT_LUA)
            self._count_script = pool.register_script(_COUNT_LUA)
            self._release_script = pool.register_script(_RELEASE_LUA)

    @property
    def unlimited(self) -> bool:
        """Neither limit is set: a submit only counts (``ApiMetrics.key_submitted``), as ``admit`` would."""
        return not self._rate and not self._max_active

    def admit(self, key_name: str, task_id: str) -> AbstractAsyncContextManager[None]:
        """Check ``key_name``'s rate and reserve one of its active slots for ``task_id`` while the caller
        enqueues it. A refused enqueue gives the slot back. With both limits off, only counts the submit."""
        if not self._rate and not self._max_active:
            return _Counted(self._metrics, key_name)
        return self._admit(key_name, task_id)

    @asynccontextmanager
    async def _admit(self, key_name: str, task_id: str) -> AsyncIterator[None]:
        with keys.on_shard(0):  # per deployment, not per task: in shard 0 (shared/keys.py)
            bucket, active_key = keys.quota_rate(self._queue, key_name), keys.quota_active(self._queue, key_name)
            args: list[str | int | float] = [self._rate or 0, self._burst, task_id, self._max_active or 0]
            args += [RESERVATION_GRACE_MS, keys.job(""), keys.result("")]
        verdict = await self._admit_script(keys=[bucket, active_key], args=args)
        if self._sharded and verdict[0] and not verdict[1] and await self._prune_shards(active_key) < self._max_active:
            args[0] = 0  # its token is taken already
            verdict = await self._admit_script(keys=[bucket, active_key], args=args)
        if not verdict[0]:
            self._refused(key_name, RateLimited.code)
            raise RateLimited(
                f"API key {key_name!r} submits faster than {self._rate:g}/s (RELAY_KEY_SUBMIT_RATE); "
                "slow down and retry",
                {"rate_per_second": self._rate, "burst": self._burst},
                headers={"Retry-After": str(max(1, math.ceil(int(verdict[1]) / 1000)))},
            )
        _, admitted, reserved, active = verdict
        if not admitted:
            self._refused(key_name, QuotaExceeded.code)
            raise QuotaExceeded(
                f"API key {key_name!r} has {active} tasks queued or running, its maximum (RELAY_KEY_MAX_ACTIVE); "
                "retry when some have ended",
                {"active": active, "max_active": self._max_active},
                headers={"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)},
            )
        try:
            yield
        except (SubmissionError, ApiError):
            # Refused for certain (conflict, full queue, bad arguments): nothing was enqueued. Any other
            # failure (Redis lost mid-enqueue) leaves the reservation for the prune to judge.
            if reserved:
                await self._pool.zrem(active_key, task_id)
            raise
        self._metrics.key_submitted(key_name)

    def _refused(self, key_name: str, code: str) -> None:
        self._metrics.key_refused.labels(key=key_name, code=code).inc()
        logger.debug("refused a submit of API key %s: %s", key_name, code)  # counted in /metrics

    async def active_counts(self) -> dict[str, int]:
        """Each known key's tasks queued or running (pruned first); empty when the cap is off."""
        if not self._max_active:
            return {}
        counts: dict[str, int] = {}
        for name in self._key_names:
            with keys.on_shard(0):
                key = keys.quota_active(self._queue, name)
            if self._sharded:
                counts[name] = await self._prune_shards(key)
                continue
            counts[name] = int(
                await self._count_script(keys=[key], args=[RESERVATION_GRACE_MS, keys.job(""), keys.result("")])
            )
        return counts

    async def _prune_shards(self, active_key: str) -> int:
        """Several shards: remove the key's ended tasks from its set ``active_key`` (in shard 0), each task's state
        read in its own shard, the oldest ``PRUNE_BATCH`` members only; the active count after."""
        members = await self._pool.zrange(active_key, 0, PRUNE_BATCH - 1, withscores=True)
        by_shard: dict[int, list[tuple[str, float]]] = {}
        for raw, score in members:
            task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            by_shard.setdefault(keys.shard_of(task_id), []).append((task_id, float(score)))
        states = await asyncio.gather(*(self._read_ended(shard, tasks) for shard, tasks in by_shard.items()))
        args: list[str | int | float] = [RESERVATION_GRACE_MS]
        for tasks, (results, jobs) in zip(by_shard.values(), states, strict=True):
            for (task_id, score), has_result, has_job in zip(tasks, results, jobs, strict=True):
                if has_result or not has_job:
                    args += [task_id, score, 1 if has_result else 0]
        if len(args) == 1:
            return len(members) if len(members) < PRUNE_BATCH else int(await self._pool.zcard(active_key))
        return int(await self._release_script(keys=[active_key], args=args))

    async def _read_ended(self, shard: int, tasks: list[tuple[str, float]]) -> tuple[list[bool], list[bool]]:
        """Whether each task's result exists and whether its job key does, read in its shard in one pipeline."""
        async with self._pool.pipeline(transaction=False) as pipe:
            with keys.on_shard(shard):
                for task_id, _ in tasks:
                    pipe.exists(keys.result(task_id))
                    pipe.exists(keys.job(task_id))
            replies = await pipe.execute()
        return [bool(r) for r in replies[0::2]], [bool(r) for r in replies[1::2]]
