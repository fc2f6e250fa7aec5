"""The times this worker promised to claim at: jobs named for it (shared/keys.py "Named claims": ``e<due>|<token>``)
and the lanes it watches (shared/keys.py "Watched due times": a claim's ``watching``).

The other workers rely on it: they were not told of a named job, and they do not wake for a watched lane. So it
keeps the promise: it claims at that time; unable to then (every slot busy, or no longer claiming), it tells every
worker of the channel (``j``); stopping before then, it ends its watches and tells them when the earliest falls due
(``d<ms>``), and the claims they make then watch the rest. Either ends every registration, as a notice to all does
(``tell_all``). A worker lost without stopping leaves its jobs to the others' polls (``RELAY_POLL_DELAY_SECONDS`` at
most after they fall due), as a lost notice does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from shared import keys
from shared.scripts import Scripts

logger = logging.getLogger("relay.worker")

Watch = tuple[str, int]  # (lane id, the ms its watch says this worker claims at)


@dataclass
class Promises:
    """Channel -> each time (Redis's clock, ms) promised there -> the lanes watched for it (none for a named job);
    and each channel's shard (``RELAY_QUEUE_SHARDS``), whose schedule a notice on it goes with."""

    _due: dict[bytes, dict[float, set[str]]] = field(default_factory=dict)
    shard_of: dict[bytes, int] = field(default_factory=dict)

    def add(self, channel: bytes, due_ms: float, lane: str | None = None, shard: int = 0) -> None:
        lanes = self._due.setdefault(channel, {}).setdefault(due_ms, set())
        if lane is not None:
            lanes.add(lane)
        self.shard_of[channel] = shard

    def next_ms(self) -> float | None:
        return min((min(times) for times in self._due.values()), default=None)

    def take_due(self, now_ms: float) -> list[bytes]:
        """The channels with a promise due by ``now_ms``; those promises are forgotten here."""
        due = []
        for channel, times in list(self._due.items()):
            passed = [t for t in times if t <= now_ms]
            if passed:
                due.append(channel)
                for t in passed:
                    del times[t]
                if not times:
                    del self._due[channel]
        return due

    def take_all(self) -> dict[bytes, tuple[float, list[Watch]]]:
        """Every promise, forgotten here: channel -> (the earliest time, the watches of the channel's lanes)."""
        taken, self._due = self._due, {}
        return {
            channel: (min(times), [(lane, int(t)) for t, lanes in times.items() for lane in lanes])
            for channel, times in taken.items()
        }


async def tell_all(
    scripts: Scripts,
    queue_name: str,
    notices: Sequence[tuple[bytes, bytes]],
    token: str = "",
    ended: Mapping[bytes, list[Watch]] | None = None,
    shard_of: Mapping[bytes, int] | None = None,
) -> None:
    """Send each (channel, notice) to every worker of the channel, ending every registration of its shard's schedule
    (``shard_of``; shard 0 when not given) as a notice to all does, and first this worker's watches ``ended`` lists
    for that channel (``shared/lua/wake_all.lua``): best effort, as every notice is (a lost one costs a poll)."""
    for channel, notice in notices:
        args: list[str | bytes | int] = [channel, notice]
        if ended and ended.get(channel):
            args.append(token)
            for lane, at in ended[channel]:
                args += [lane, at]
        try:
            with keys.on_shard((shard_of or {}).get(channel, 0)):
                await scripts.wake_all(keys=[keys.schedule(queue_name)], args=args)
        except (RedisError, OSError) as exc:
            logger.debug("wake-up notice not sent: %s", exc)
