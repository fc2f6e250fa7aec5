"""Per-API-key submit quotas, shared by every API process through Redis: a rate limit and a cap on
tasks not yet ended. Each check is one Lua script. With both limits off (the default) nothing here
touches Redis.

The cap needs no help from workers: each key has a sorted set of its task ids, reserved before the
enqueue and released if the enqueue refuses. Ended tasks are pruned lazily, only when the set looks
full: a task has ended when arq's result key exists, or when its job key is gone (expired, or never
written by a submit that died after reserving: such a reservation is kept for a grace period first,
so a concurrent check cannot prune a task whose enqueue is still on its way).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq.connections import ArqRedis

from api.errors import ApiError, QuotaExceeded, RateLimited
from api.metrics import ApiMetrics
from shared import keys
from shared.errors import SubmissionError
from shared.settings import Settings

logger = logging.getLogger("relay.api.quotas")

RESERVATION_GRACE_MS = 60_000  # far longer than any submit takes between its reservation and its enqueue
QUOTA_RETRY_AFTER_SECONDS = 5

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# Relay runs on one Redis (arq does not support Cluster), so reading job keys named from the set's
# members, which no caller could declare in advance, is safe.
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
# KEYS: the key's set. ARGV: task id, max active, grace ms, job prefix, result prefix.
# Returns {admitted, newly reserved, active count}.
_RESERVE_LUA = (
    _NOW
    + _PRUNE
    + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {1, 0, redis.call('ZCARD', KEYS[1])} end
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[2]) then
  count = prune(KEYS[1], tonumber(ARGV[3]), ARGV[4], ARGV[5])
  if count >= tonumber(ARGV[2]) then return {0, 0, count} end
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {1, 1, count + 1}
"""
)
# KEYS: the key's set. ARGV: grace ms, job prefix, result prefix. Returns the active count.
_COUNT_LUA = _NOW + _PRUNE + "return prune(KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3])"
# A token bucket on Redis's clock. KEYS: the key's bucket. ARGV: rate per second, burst.
# Returns {admitted, ms until the next token}.
_RATE_LUA = (
    _NOW
    + """
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
if tokens < 1 then return {0, math.ceil((1 - tokens) / rate)} end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate))
return {1, 0}
"""
)


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
        self._rate_script = pool.register_script(_RATE_LUA)
        self._reserve_script = pool.register_script(_RESERVE_LUA)
        self._count_script = pool.register_script(_COUNT_LUA)

    @asynccontextmanager
    async def admit(self, key_name: str, task_id: str) -> AsyncIterator[None]:
        """Check ``key_name``'s rate and reserve one of its active slots for ``task_id`` while the caller
        enqueues it. A refused enqueue gives the slot back."""
        await self._check_rate(key_name)
        if not self._max_active:
            yield
            self._metrics.key_submits.labels(key=key_name).inc()
            return
        active_key = keys.quota_active(self._queue, key_name)
        args: list[str | int] = [task_id, self._max_active, RESERVATION_GRACE_MS, keys.job(""), keys.result("")]
        admitted, reserved, active = await self._reserve_script(keys=[active_key], args=args)
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
        self._metrics.key_submits.labels(key=key_name).inc()

    async def _check_rate(self, key_name: str) -> None:
        if not self._rate:
            return
        bucket = keys.quota_rate(self._queue, key_name)
        admitted, wait_ms = await self._rate_script(keys=[bucket], args=[self._rate, self._burst])
        if not admitted:
            self._refused(key_name, RateLimited.code)
            raise RateLimited(
                f"API key {key_name!r} submits faster than {self._rate:g}/s (RELAY_KEY_SUBMIT_RATE); "
                "slow down and retry",
                {"rate_per_second": self._rate, "burst": self._burst},
                headers={"Retry-After": str(max(1, math.ceil(int(wait_ms) / 1000)))},
            )

    def _refused(self, key_name: str, code: str) -> None:
        self._metrics.key_refused.labels(key=key_name, code=code).inc()
        logger.debug("refused a submit of API key %s: %s", key_name, code)  # counted in /metrics

    async def active_counts(self) -> dict[str, int]:
        """Each known key's tasks queued or running (pruned first); empty when the cap is off."""
        if not self._max_active:
            return {}
        counts: dict[str, int] = {}
        for name in self._key_names:
            key = keys.quota_active(self._queue, name)
            counts[name] = int(
                await self._count_script(keys=[key], args=[RESERVATION_GRACE_MS, keys.job(""), keys.result("")])
            )
        return counts
