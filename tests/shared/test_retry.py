"""The retry policy's arithmetic: which failures retry, and the capped, jittered exponential wait."""

from __future__ import annotations

import random

import pytest

from shared.retry import NO_RETRIES, RetryPolicy


class Transient(ConnectionError):
    pass


def test_the_default_retries_nothing() -> None:
    assert NO_RETRIES.max_retries == 0
    assert not NO_RETRIES.retries(ConnectionError("down"), timed_out=False)
    assert not NO_RETRIES.retries(TimeoutError(), timed_out=True)


def test_only_named_exceptions_and_their_subclasses_retry() -> None:
    policy = RetryPolicy(max_retries=3, retry_on=(ConnectionError,))
    assert policy.retries(Transient("reset"), timed_out=False)
    assert policy.retries(ConnectionError("reset"), timed_out=False)
    assert not policy.retries(ValueError("bad input"), timed_out=False)


def test_a_timeout_retries_only_when_the_policy_says_so() -> None:
    named = RetryPolicy(max_retries=3, retry_on=(TimeoutError,))
    assert not named.retries(TimeoutError(), timed_out=True)  # retry_on does not cover the task's own timeout
    assert RetryPolicy(max_retries=3, retry_on_timeout=True).retries(RuntimeError(), timed_out=True)


def test_the_ceiling_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=10, backoff_seconds=0.5, backoff_max_seconds=3.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_full_jitter_draws_below_the_ceiling_and_spreads() -> None:
    policy = RetryPolicy(max_retries=10, backoff_seconds=1.0, backoff_max_seconds=4.0)
    rng = random.Random(7)
    draws = [policy.delay(5, rng) for _ in range(1000)]
    assert all(0.0 <= d <= 4.0 for d in draws)
    assert max(draws) > 3.5
    assert min(draws) < 0.5
    assert RetryPolicy(backoff_seconds=1.0, backoff_max_seconds=4.0, jitter=False).delay(5) == 4.0


@pytest.mark.parametrize("fields", [{"max_retries": -1}, {"backoff_seconds": -1.0}, {"backoff_max_seconds": -0.1}])
def test_negative_values_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        RetryPolicy(**fields)  # type: ignore[arg-type]
