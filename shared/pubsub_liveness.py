"""Whether a pub/sub connection still carries bytes, for a reader that would otherwise wait on it for ever.

A connection cut without a FIN or a RST (a failover that moved the address a DNS name or load balancer points at,
a NAT or proxy dropping the flow) reads as silence, not as an error: ``get_message`` just returns None, and
redis-py's own health check sends a PING on a subscribed connection but never waits for its reply. Until the
kernel's keepalive gives up (hours, by default), the subscriptions on it hear nothing, and a new one waits for a
confirmation that never comes. So the reader sends a PING of its own after ``quiet`` seconds with nothing read,
and takes a connection that has not answered it ``answer_within`` seconds later as dead: it drops it, and
redis-py connects again and re-subscribes every channel at its next read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

PROBE: Final = b"relay-liveness"  # the PING's message, so its PONG is told apart from redis-py's health check's


class Liveness:
    """The probe's state for one connection, on a monotonic clock (``clock``, for tests)."""

    def __init__(self, quiet: float, answer_within: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._quiet = quiet
        self._answer_within = answer_within
        self._clock = clock
        self._last_heard = clock()
        self._probe_sent: float | None = None

    def heard(self) -> None:
        """Something was read: the connection is alive."""
        self._last_heard = self._clock()
        self._probe_sent = None

    def suspect(self) -> None:
        """Probe at the next chance rather than after ``quiet`` seconds (a subscription went unconfirmed)."""
        if self._probe_sent is None:
            self._last_heard = self._clock() - self._quiet

    def probe_due(self) -> bool:
        """Nothing read for ``quiet`` seconds and no probe on its way: send one (then ``probe_sent``)."""
        return self._probe_sent is None and self._clock() - self._last_heard >= self._quiet

    def probe_sent(self) -> None:
        self._probe_sent = self._clock()

    def dead(self) -> bool:
        """The probe went unanswered for ``answer_within`` seconds."""
        return self._probe_sent is not None and self._clock() - self._probe_sent >= self._answer_within
