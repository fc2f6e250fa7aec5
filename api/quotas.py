"""Per-API-key submit quotas, shared by every API process through Redis: a rate limit and a cap on
tasks not yet ended. A submit's checks are one Lua script, one round trip, whichever limits are set. With
both limits off (the default) nothing here touches Redis.

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
        self._admit_script = pool.register_script(_ADMIT_LUA)
        self._count_script = pool.register_script(_COUNT_LUA)

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
            key = keys.quota_active(self._queue, name)
            counts[name] = int(
                await self._count_script(keys=[key], args=[RESERVATION_GRACE_MS, keys.job(""), keys.result("")])
            )
        return counts
