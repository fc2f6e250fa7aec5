"""Retry policies: how often a failed task runs again, and how long it waits in between."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """Declared where a task is registered; the default retries nothing (a failure is final).

    ``retry_on`` lists the exception types that retry (subclasses included); a task's timeout retries only
    with ``retry_on_timeout``. The wait before retry ``n`` (1-based) is exponential, capped, and with full
    jitter drawn uniformly from ``[0, min(backoff_max_seconds, backoff_seconds * 2**(n-1))]``, so tasks that
    failed together do not all come back together.
    """

    max_retries: int = 0
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = field(default=())
    retry_on_timeout: bool = False

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.backoff_seconds < 0 or self.backoff_max_seconds < 0:
            raise ValueError("backoff must be >= 0")

    def retries(self, exc: BaseException, timed_out: bool) -> bool:
        """Whether this failure is one the policy retries (the budget is checked separately)."""
        if timed_out:
            return self.retry_on_timeout
        return bool(self.retry_on) and isinstance(exc, self.retry_on)

    def ceiling(self, retry_number: int) -> float:
        """The longest wait before retry ``retry_number`` (1-based)."""
        return float(min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, retry_number - 1)))

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The wait before retry ``retry_number``: the ceiling, or a uniform draw below it with jitter."""
        ceiling = self.ceiling(retry_number)
        if not self.jitter:
            return ceiling
        return float((rng or random).uniform(0.0, ceiling))


NO_RETRIES = RetryPolicy()
