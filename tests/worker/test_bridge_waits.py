"""The Service Bus bridge stops receiving while a refusal holds (``worker.bridge.service``): it asks again where the
refusal came from. With several shards (``RELAY_QUEUE_SHARDS``) each has its own primary and replicas: the end to
end waits are in tests/e2e/test_bridge.py."""

from __future__ import annotations

from typing import Any, cast

import pytest
from arq.connections import ArqRedis

from shared import keys
from shared.durability import NotReplicated
from shared.settings import Settings
from worker.bridge import service
from worker.bridge.service import ServiceBusBridge


async def test_lagging_replicas_are_asked_on_the_shard_that_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """It asked shard 0's primary whatever shard refused: with shard 2's replicas lagging and shard 0's fine, it
    received again at once, and every message for shard 2 was abandoned again."""
    asked: list[int] = []

    async def replicas_confirm(client: Any, settings: Settings) -> bool:
        asked.append(keys.current_shard())
        return True

    monkeypatch.setattr(service, "replicas_confirm", replicas_confirm)
    with keys.layout("relay:bridge-waits", cluster=True, shards=3):
        task_id = next(t for t in (f"order-{i}" for i in range(100)) if keys.shard_of(t) == 2)
        settings = Settings(queue_name="relay:bridge-waits", servicebus_queue="orders")
        pool = ArqRedis(host="127.0.0.1", port=1)  # never reached: the check is stubbed
        bridge = ServiceBusBridge(settings, pool, cast(Any, None), cast(Any, None))
        await bridge._wait_for_replicas(NotReplicated(task_id, 0, 1, 100))
    assert asked == [2]
