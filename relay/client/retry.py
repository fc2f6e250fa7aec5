"""When to try again: the server's ``Retry-After`` when it gives one, else capped exponential backoff with jitter.

Shared by the sync and async clients; it decides, they sleep.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from relay.client.config import RetryPolicy
from relay.client.errors import RelayConnectionError, RelayError, ResultTimeout

logger = logging.getLogger("relay.client")


class RetryBudget:
    """Consecutive failures of one operation share ``policy.max_wait_seconds`` of waiting; progress resets it.

    ``first_contact``: the API has not answered this client yet, so connection failures get only
    ``policy.first_contact_wait_seconds`` (when set); the first answer (``answered``) lifts that."""

    def __init__(
        self, policy: RetryPolicy, rand: Callable[[], float] | None = None, first_contact: bool = False
    ) -> None:
        self._policy = policy
        self._rand = rand or random.random
        self.first_contact = first_contact
        self.attempt = 0
        self.spent = 0.0

    def reset(self) -> None:
        self.attempt = 0
        self.spent = 0.0
        self.first_contact = False

    def answered(self) -> None:
        """The API answered (even with a refusal): it exists, so the full budget applies from now on."""
        self.first_contact = False

    def limit(self, error: RelayError) -> float:
        """How long, in all, ``error`` may be waited out."""
        first = self._policy.first_contact_wait_seconds
        if self.first_contact and first is not None and isinstance(error, RelayConnectionError):
            return min(first, self._policy.max_wait_seconds)
        return self._policy.max_wait_seconds

    def next_delay(self, retry_after: float | None, limit: float | None = None) -> float | None:
        """Seconds to wait before the next try, or None when that would exceed the budget."""
        if retry_after is not None:
            delay = retry_after
        else:
            # "Full jitter": uniform over [0, cap), so clients cut off together do not return together.
            delay = self._rand() * min(self._policy.backoff_max, self._policy.backoff_base * 2**self.attempt)
        if self.spent + delay > (self._policy.max_wait_seconds if limit is None else limit):
            return None
        self.attempt += 1
        self.spent += delay
        return delay

    def wait_or_raise(self, error: RelayError) -> float:
        """The wait before retrying after ``error``; raises it when it is not retryable or the budget is spent.
        Each retry is logged at WARNING: a caller waiting on a dead API hears of it, try by try."""
        if not error.retryable:
            raise error
        limit = self.limit(error)
        delay = self.next_delay(error.retry_after, limit)
        if delay is None:
            raise error
        logger.warning(
            "%s; retry %d in %.1fs (%.1fs of %gs waited)", error, self.attempt, delay, self.spent - delay, limit
        )
        return delay


class Deadline:
    """The end of a wait the caller bounded (``result(timeout=...)``)."""

    def __init__(self, task_id: str, timeout: float, kind: str = "task") -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.kind = kind  # "task" or "workflow": what the ResultTimeout names
        self._end = time.monotonic() + timeout

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def check(self) -> None:
        if self.expired():
            raise ResultTimeout(self.task_id, self.timeout, self.kind)

    def clamp(self, seconds: float) -> float:
        """``seconds``, or what is left of the deadline if that is less."""
        return min(seconds, self.remaining())


def bounded(seconds: float, deadline: Deadline | None) -> float:
    """A wait or read timeout that never outlasts the deadline."""
    return deadline.clamp(seconds) if deadline is not None else seconds
