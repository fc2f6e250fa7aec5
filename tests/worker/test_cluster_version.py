"""A worker on a Redis Cluster refuses to start (exit 78, one line) when a primary predates Redis 7.0: every script
publishes with SPUBLISH there (sharded pub/sub), so it would fail on each call instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.config_errors import CONFIG_ERROR_EXIT_CODE, ConfigError
from shared.redis import RelayCluster, api_client, close
from shared.settings import Settings
from worker.connect import log_redis_info

pytestmark = pytest.mark.cluster


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[RelayCluster]:
    client = api_client(Settings(redis_url=redis_cluster_url, redis_cluster=True, queue_name="relay:version"))
    assert isinstance(client, RelayCluster)
    yield client
    await close(client)


async def test_a_cluster_of_redis_7_starts_and_logs_each_primary(cluster: RelayCluster) -> None:
    lines: list[str] = []
    await log_redis_info(cluster, lines.append)
    assert len(lines) == 3, lines
    assert all("redis_version=7." in line for line in lines), lines


async def test_a_primary_older_than_redis_7_refuses_the_start(
    cluster: RelayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_info = cluster.info

    async def info(*args: Any, **kwargs: Any) -> Any:
        answer = dict(await real_info(*args, **kwargs))
        return answer | {"redis_version": "6.2.14"}  # as a Redis 6 primary answers

    monkeypatch.setattr(cluster, "info", info)
    with pytest.raises(ConfigError) as refused:
        await log_redis_info(cluster, lambda _: None)
    assert refused.value.code == CONFIG_ERROR_EXIT_CODE
    assert str(refused.value).startswith("a Redis Cluster needs Redis 7.0 or later (sharded pub/sub): ")
    assert str(refused.value).count("runs Redis 6.2.14") == 3
