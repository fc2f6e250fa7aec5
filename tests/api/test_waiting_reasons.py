"""A task list page asks why its waiting tasks wait once per distinct lane, not once per task."""

from __future__ import annotations

import asyncio
from typing import Any

from api import waiting


class _ServesEverything:
    async def serves(self, name: str, queue: str) -> bool:
        return True

    def cached(self, name: str) -> None:
        return None


class _CountingWhy:
    def __init__(self) -> None:
        self.lanes: list[str] = []

    async def why(self, keys: list[str], args: list[Any]) -> list[bytes]:
        self.lanes.append(str(args[0]))
        await asyncio.sleep(0)
        return [b"priority"] if str(args[0]).startswith("low") else [b"none"]


def _view(task_id: str, state: str, lane: str) -> dict[str, Any]:
    return {"id": task_id, "state": state, "task": "sleep", "queue": "default", "priority": 0, "lane": lane}


def test_a_page_asks_once_per_distinct_lane_and_keeps_each_views_answer() -> None:
    views = [_view(f"a{i}", "queued", "low|default|0||") for i in range(5)]
    views += [_view(f"b{i}", "queued", "high|default|0||") for i in range(3)]
    views.insert(2, _view("r", "running", "low|default|0||"))
    scripts = _CountingWhy()

    reasons = asyncio.run(waiting.reasons(_ServesEverything(), scripts, "q", views))  # type: ignore[arg-type]

    assert sorted(scripts.lanes) == ["high|default|0||", "low|default|0||"]
    expected = ["behind higher-priority work"] * 2 + [None] + ["behind higher-priority work"] * 3 + [None] * 3
    assert reasons == expected
