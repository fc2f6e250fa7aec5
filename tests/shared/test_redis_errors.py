"""Every Redis failure has its own code, a Retry-After and a transient flag; nothing else is claimed."""

from __future__ import annotations

import pytest
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    DataError,
    MaxConnectionsError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from shared.errors import QueueFull
from shared.redis_errors import classify, is_transient
from shared.redis_pools import PoolExhausted


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConnectionError("Error 111 connecting"), "redis_unavailable"),
        (TimeoutError("Timeout reading from socket"), "redis_unavailable"),
        (MasterNotFoundError("No master found for 'relay'"), "redis_unavailable"),
        (PoolExhausted("all 50 Redis connections stayed busy"), "redis_pool_exhausted"),
        (MaxConnectionsError("Too many connections"), "redis_pool_exhausted"),
        (BusyLoadingError("Redis is loading the dataset in memory"), "redis_loading"),
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "redis_oom"),
        (ReadOnlyError("You can't write against a read only replica."), "redis_readonly"),
        (NoScriptError("No matching script."), "redis_noscript"),
        # a reshard moving the queue's slot: TRYAGAIN, and redis-py's error once its 16 tries ran out
        (TryAgainError("Multiple keys request during rehashing of slot"), "redis_slot_moving"),  # type: ignore[no-untyped-call]
        (ClusterError("TTL exhausted."), "redis_slot_moving"),
        (ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL"), "redis_busy"),
        (ResponseError("MASTERDOWN Link with MASTER is down"), "redis_masterdown"),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), "redis_no_replicas"),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots"), "redis_misconf"),
        # what redis-py's asyncio pipelines make of an error reply
        (
            ResponseError("""Command # 1 (GET arq:result:x) of pipeline caused error: ('MASTERDOWN Link',)"""),
            "redis_masterdown",
        ),
        (ResponseError("Command # 2 (EVALSHA ab 0) of pipeline caused error: BUSY Redis is busy"), "redis_busy"),
    ],
)
def test_each_transient_failure_has_its_code(exc: Exception, code: str) -> None:
    failure = classify(exc)
    assert failure is not None
    assert failure.code == code
    assert failure.retry_after >= 1
    assert failure.transient
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        AuthenticationError("invalid username-password pair"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ResponseError("BUSYKEY Target key name already exists."),  # not BUSY
        DataError("Invalid input of type: 'dict'"),
    ],
)
def test_configuration_and_programming_errors_are_not_transient(exc: Exception) -> None:
    failure = classify(exc)
    assert failure is not None
    assert not failure.transient
    assert not is_transient(exc)


def test_other_exceptions_are_not_redis_failures() -> None:
    assert classify(ValueError("x")) is None
    assert classify(QueueFull("full")) is None
    assert is_transient(OSError("reset by peer"))  # redis-py may leak one from a socket
    assert not is_transient(ValueError("x"))


def test_a_cluster_that_is_down_is_not_said_to_be_moving_a_slot() -> None:
    """ClusterDownError is a ClusterError too: only redis-py's own "TTL exhausted." means a slot in motion."""
    failure = classify(ClusterDownError("CLUSTERDOWN The cluster is down"))  # type: ignore[no-untyped-call]
    assert failure is not None
    assert failure.code != "redis_slot_moving"
