"""A queue over several Redis Cluster slots (``RELAY_QUEUE_SHARDS``): which shard a task is in, from its id alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from shared import keys, tenancy
from shared.settings import ConfigError, load_settings
from shared.tasks import TASK_ID_REGEX

task_ids = st.from_regex(TASK_ID_REGEX, fullmatch=True)
NAMESPACE = "relay:queue"


def test_one_shard_is_the_layout_before_sharding() -> None:
    with keys.layout(NAMESPACE, cluster=True):
        assert keys.shard_count() == 1
        assert keys.shard_of("anything") == 0
        with keys.on_task_shard("anything"):
            assert keys.job("x") == "{relay:relay:queue}arq:job:x"
            assert keys.task_index(NAMESPACE) == "{relay:relay:queue}relay:index:{relay:relay:queue}relay:queue"
    with keys.layout(NAMESPACE, cluster=False):
        assert keys.job("x") == "arq:job:x"


def test_each_shard_is_a_whole_namespace_in_its_own_slot() -> None:
    with keys.layout(NAMESPACE, cluster=True, shards=3):
        assert keys.job("x") == "{relay:relay:queue:0}arq:job:x"  # no shard chosen: shard 0 (presence, catalogue)
        slots = set()
        for shard in keys.shards():
            with keys.on_shard(shard):
                tag = "{relay:relay:queue:" + str(shard) + "}"
                built = [keys.job("x"), keys.lane(NAMESPACE, "t|default|0||"), keys.wakeup_channel(NAMESPACE)]
                built += [keys.inbox_channel(NAMESPACE, "p"), keys.children("x"), keys.flow("x")]
                assert all(name.startswith(tag) for name in built)
                assert {key_slot(name.encode()) for name in built} == {key_slot(tag.encode())}
                slots.add(key_slot(tag.encode()))
        assert len(slots) == 3
        assert keys.job("x") == "{relay:relay:queue:0}arq:job:x"  # the block's shard ends with it


@given(task_ids, st.integers(1, 1000), st.integers(0, 1000))
def test_steps_and_children_share_their_workflows_or_parents_shard(flow_id: str, step: int, base: int) -> None:
    for shards in (2, 3, 16):
        shard = keys.shard_of(flow_id, shards)
        step_id = keys.step_id(flow_id, step)
        assert keys.shard_of(step_id, shards) == shard
        for child in (f"{step_id}.1", f"{step_id}.r{base}.2", f"{flow_id}.3", f"{flow_id}.r{base}.4.5"):
            assert keys.shard_of(child, shards) == shard
            assert keys.shard_of(tenancy.stored_id("acme", child), shards) == keys.shard_of(
                tenancy.stored_id("acme", flow_id), shards
            )


def test_shard_of_is_crc16_of_the_id_mod_the_shards() -> None:
    # The same CRC16 Redis Cluster uses for slots (XMODEM), so any client can compute it: crc16("123456789") = 0x31C3.
    assert keys.shard_of("123456789", 0x31C3 + 1) == 0x31C3
    assert keys.shard_of("123456789", 7) == 0x31C3 % 7
    assert keys.shard_key("order-5") == "order-5"
    assert keys.shard_key("f:12.r2.3") == "f"


def test_random_ids_spread_over_the_shards() -> None:
    counts = [0, 0, 0]
    for i in range(3000):
        counts[keys.shard_of(f"{i:032x}", 3)] += 1
    assert min(counts) > 800, counts


def test_several_shards_need_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_QUEUE_SHARDS", "3")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "RELAY_QUEUE_SHARDS=3 needs RELAY_REDIS_CLUSTER=true" in str(caught.value)
    monkeypatch.setenv("RELAY_REDIS_CLUSTER", "true")
    assert load_settings().queue_shards == 3


def test_the_active_tasks_cap_and_the_bridge_are_accepted_with_several_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_QUEUE_SHARDS", "3")
    monkeypatch.setenv("RELAY_REDIS_CLUSTER", "true")
    monkeypatch.setenv("RELAY_KEY_MAX_ACTIVE", "10")
    monkeypatch.setenv("RELAY_SERVICEBUS_NAMESPACE", "x.servicebus.windows.net")
    monkeypatch.setenv("RELAY_SERVICEBUS_QUEUE", "tasks")
    settings = load_settings()
    assert settings.key_max_active == 10  # counted over every shard (api.quotas)
    assert settings.servicebus_enabled  # its replies sent from every shard's outbox (worker.bridge.replies)
