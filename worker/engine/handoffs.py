"""A worker's count of the jobs handed to it (shared/keys.py "Hand-off"), kept in step with Redis's.

Redis counts every job an enqueue hands to this worker (``handed``); the worker counts those it received. The
claim takes the difference as jobs still on their way, and so as slots taken (an item may be popped and on its
way while the worker works out its free slots). Two things can leave the counts apart for good, and each is
reconciled here from what the claim reads back:

- An item popped whose reply never arrived (the connection dropped, redis-py asked again): Redis counted it, the
  worker never will. The job itself is safe (its lease lapses, another worker takes it over), but the gap would
  cost a slot for ever. A gap that never closed across two leases is such a loss (a real hand-off arrives within
  milliseconds, and a lost one's lease has lapsed by then), so its smallest size over that time is taken as lost.
- An item never popped that the sweep put back in its lane: Redis takes it off its count, which may then be below
  the worker's; the worker follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger("relay.worker")


@dataclass
class HandoffCount:
    """Handed jobs this worker received, and a gap to Redis's count being watched (see the module docstring)."""

    lease_seconds: float
    received: int = 0
    _gap: int | None = None  # the smallest gap seen since ``_since``
    _since: float = 0.0  # time.monotonic() the gap was first seen

    def observe(self, handed: int, received_then: int, now: float) -> None:
        """A claim sent when ``received_then`` were received read Redis's count ``handed``."""
        gap = handed - received_then
        if gap < 0:
            self.received += gap
            gap = 0
        if gap == 0:
            self._gap = None
            return
        if self._gap is None:
            self._gap, self._since = gap, now
            return
        self._gap = min(self._gap, gap)
        if now - self._since >= 2 * self.lease_seconds:
            logger.warning(
                "%d hand-offs never reached this worker (a lost reply); their jobs went to other workers once their "
                "leases lapsed",
                self._gap,
            )
            self.received += self._gap
            self._gap = None
