"""Redis's own count of the commands it ran (``INFO commandstats``), for both virtualenvs (redis-py only).

Commands run inside Lua scripts are counted too (EVALSHA once, plus each command it calls), which is
what we want: they are work Redis does per task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, cast

import redis

Calls = dict[str, int]


def snapshot(client: redis.Redis) -> Calls:
    """Calls per command name so far (``get``, ``client|setinfo``, ...)."""
    stats = cast(dict[str, Any], client.info("commandstats"))  # redis-py types sync and async alike
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def delta(before: Mapping[str, int], after: Mapping[str, int], own: Mapping[str, int] | None = None) -> Calls:
    """Calls made between two snapshots, minus ``own`` (the measuring code's own commands, e.g. its INFO)."""
    diff = Counter({name: after[name] - before.get(name, 0) for name in after})
    diff.subtract(own or {})
    return {name: n for name, n in sorted(diff.items()) if n > 0}


def total(calls: Mapping[str, int]) -> int:
    return sum(calls.values())


INFO_ONCE: Calls = {"info": 1}  # a snapshot's INFO shows up in the next snapshot
