"""Jobs named for this worker to claim when they fall due (shared/keys.py "Named claims"): ``e<due>|<token>``.

Only the named worker heard of such a job (the others' registrations stand, and they were not woken), so it keeps
the promise: it claims when the job falls due; unable to then (every slot busy, or no longer claiming), it tells
every worker of the job's channel (``j``); stopping before then, it tells them when the job falls due
(``d<ms>``). Either ends every registration, as a notice to all does (``tell_all``). A worker lost without
stopping leaves the job to the others' polls (``RELAY_POLL_DELAY_SECONDS`` at most), as a lost notice does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from shared import keys
from shared.scripts import Scripts

logger = logging.getLogger("relay.worker")


@dataclass
class Promises:
    """Channel -> the earliest due time (Redis's clock, ms) of the jobs named for this worker there."""

    _due: dict[bytes, float] = field(default_factory=dict)

    def add(self, channel: bytes, due_ms: float) -> None:
        self._due[channel] = min(due_ms, self._due.get(channel, due_ms))

    def next_ms(self) -> float | None:
        return min(self._due.values(), default=None)

    def take_due(self, now_ms: float) -> list[bytes]:
        """The channels whose promised jobs are due by ``now_ms``, forgotten here."""
        due = [channel for channel, due_ms in self._due.items() if due_ms <= now_ms]
        for channel in due:
            del self._due[channel]
        return due

    def take_all(self) -> dict[bytes, float]:
        taken, self._due = self._due, {}
        return taken


async def tell_all(scripts: Scripts, queue_name: str, notices: list[tuple[bytes, bytes]]) -> None:
    """Send each (channel, notice) to every worker of the channel, ending every registration as a notice to all
    does (``shared/lua/wake_all.lua``): best effort, as every notice is (a lost one costs a poll)."""
    for channel, notice in notices:
        try:
            await scripts.wake_all(keys=[keys.schedule(queue_name)], args=[channel, notice])
        except (RedisError, OSError) as exc:
            logger.debug("wake-up notice not sent: %s", exc)
