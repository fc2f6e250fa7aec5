"""An API on a Redis Cluster whose primary predates Redis 7.0 stays unready and says why, once: its hub and
every script use sharded pub/sub there, so it could serve nothing (the worker refuses to start instead:
tests/worker/test_cluster_version.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from api.resources import Resources
from api.routes.health import ready
from shared.redis import RelayCluster
from shared.settings import Settings

pytestmark = pytest.mark.cluster


async def readiness(res: Resources) -> tuple[int, dict[str, Any]]:
    request = SimpleNamespace(app=SimpleNamespace(ctx=SimpleNamespace(res=res)))
    response = await ready(request)  # type: ignore[arg-type]
    return response.status, json.loads(response.body)


async def open_on(redis_cluster_url: str) -> Resources:
    settings = Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name=f"relay:v:{uuid.uuid4().hex[:8]}")
    res = await Resources.open(settings)
    assert res._connector is not None
    await asyncio.wait_for(asyncio.shield(res._connector), timeout=30)
    return res


async def test_an_api_on_a_cluster_with_a_redis_6_primary_stays_unready_saying_why(
    redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_info = RelayCluster.info

    async def info(self: RelayCluster, *args: Any, **kwargs: Any) -> Any:
        answer = dict(await real_info(self, *args, **kwargs))
        return answer | {"redis_version": "6.2.14"}  # as a Redis 6 primary answers

    monkeypatch.setattr(RelayCluster, "info", info)
    with caplog.at_level(logging.ERROR, logger="relay.api"):
        res = await open_on(redis_cluster_url)
    try:
        assert res.unsupported is not None
        assert res.unsupported.startswith("a Redis Cluster needs Redis 7.0 or later (sharded pub/sub): ")
        assert res.unsupported.count("runs Redis 6.2.14") == 3
        assert [r.getMessage() for r in caplog.records] == [f"API: not ready, and never will be on this Redis: "
                                                             f"{res.unsupported}"]  # fmt: skip
        assert await readiness(res) == (503, {"status": "redis_unsupported"})
    finally:
        await res.close()


async def test_an_api_on_a_cluster_of_redis_7_gets_ready(redis_cluster_url: str) -> None:
    res = await open_on(redis_cluster_url)
    try:
        assert res.unsupported is None
        assert res.connected.is_set()
        assert await readiness(res) == (200, {"status": "ready"})
    finally:
        await res.close()
