"""What a Redis failure means for a caller: its error code, when to retry, and whether retrying can help.

One table for every entry point: the API answers each with 503, its code and ``Retry-After``
(``api.errors``); the Service Bus bridge abandons the message and waits for Redis to accept writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterError,
    ConnectionError,
    MaxConnectionsError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from shared.redis_pools import PoolExhausted


class ClusterUnreachable(ConnectionError):
    """A Redis Cluster client could not read the cluster's layout or find a node for a slot (redis-py raises its
    ``RedisClusterException``, not a ``RedisError``, for both): an outage like a refused connection, raised as one
    so that every handler of Redis failures rides it out (``shared.cluster_nodes``, ``shared.redis``)."""


@dataclass(frozen=True, slots=True)
class RedisFailure:
    """How to answer a Redis failure. ``transient``: the same request can succeed later without anyone
    changing configuration or code."""

    code: str
    retry_after: int  # seconds
    transient: bool
    message: str


UNAVAILABLE = RedisFailure("redis_unavailable", 2, True, "the task store is unavailable; retry shortly")
POOL_EXHAUSTED = RedisFailure(
    "redis_pool_exhausted", 1, True, "this API process has no free Redis connection; retry shortly"
)
OOM = RedisFailure("redis_oom", 10, True, "the task store is out of memory and refuses new writes; retry later")
READONLY = RedisFailure(
    "redis_readonly", 1, True, "the task store is read-only (a failover is under way); retry shortly"
)
LOADING = RedisFailure("redis_loading", 5, True, "the task store is loading its data after a restart; retry shortly")
BUSY = RedisFailure("redis_busy", 2, True, "the task store is busy running a script; retry shortly")
MASTERDOWN = RedisFailure(
    "redis_masterdown", 2, True, "the task store's replica lost its primary (a failover is under way); retry shortly"
)
NO_REPLICAS = RedisFailure(
    "redis_no_replicas", 2, True, "the task store has too few replicas to accept writes; retry shortly"
)
MISCONF = RedisFailure(
    "redis_misconf", 10, True, "the task store cannot persist to disk and refuses writes; retry later"
)
SLOT_MOVING = RedisFailure(
    "redis_slot_moving", 1, True, "the task store is moving this queue to another cluster node; retry shortly"
)
NOSCRIPT = RedisFailure("redis_noscript", 1, True, "the task store lost its scripts (flushed); retry")
AUTH = RedisFailure("redis_auth", 10, False, "the task store refused Relay's credentials")
UNKNOWN = RedisFailure("redis_error", 5, False, "the task store answered with an unexpected error")

# Error replies redis-py has no class for: the first word of the message says what happened.
_BY_PREFIX = {"BUSY": BUSY, "MASTERDOWN": MASTERDOWN, "NOREPLICAS": NO_REPLICAS, "MISCONF": MISCONF}

# Checked in order: subclasses before their bases (BusyLoadingError and PoolExhausted are ConnectionErrors).
_BY_TYPE: tuple[tuple[type[RedisError], RedisFailure], ...] = (
    (PoolExhausted, POOL_EXHAUSTED),
    (MaxConnectionsError, POOL_EXHAUSTED),
    (BusyLoadingError, LOADING),
    (AuthenticationError, AUTH),
    (NoPermissionError, AUTH),
    (OutOfMemoryError, OOM),
    (ReadOnlyError, READONLY),
    (NoScriptError, NOSCRIPT),
    (TryAgainError, SLOT_MOVING),
    (ConnectionError, UNAVAILABLE),
    (TimeoutError, UNAVAILABLE),
)


def classify(exc: BaseException) -> RedisFailure | None:
    """The failure ``exc`` stands for, or None when it is not a Redis error."""
    if not isinstance(exc, RedisError):
        return None
    if type(exc) is ClusterError:  # redis-py's "TTL exhausted.": still redirected or TRYAGAIN after 16 tries
        return SLOT_MOVING
    for kind, failure in _BY_TYPE:
        if isinstance(exc, kind):
            return failure
    if isinstance(exc, ResponseError):
        return _BY_PREFIX.get(_reply_code(exc), UNKNOWN)
    return UNKNOWN


# redis-py rewrites an error met inside a pipeline as "Command # 1 (GET k) of pipeline caused error: ..."
# (the asyncio client with the original args' repr: "('MASTERDOWN ...',)").
_REPLY_CODE = re.compile(r"^(?:Command # \d+ .*? of pipeline caused error: \(?['\"]?)?([A-Z]+)\b", re.DOTALL)


def _reply_code(exc: ResponseError) -> str:
    """The error reply's first word (BUSY, MASTERDOWN...), also for an error met inside a pipeline."""
    match = _REPLY_CODE.match(str(exc))
    return match.group(1) if match else ""


def is_transient(exc: BaseException) -> bool:
    """True for Redis failures that pass by themselves (and for OSErrors, which redis-py may leak)."""
    failure = classify(exc)
    return failure.transient if failure is not None else isinstance(exc, OSError)


# For ``except`` clauses (which need types, not a predicate): every Redis error, since an entry point
# that cannot store a task must give it back (the bridge abandons the message) rather than drop it.
# ``is_transient`` / ``classify`` tell the kinds apart.
REDIS_FAILURES = (RedisError, OSError)
