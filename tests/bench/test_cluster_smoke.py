"""``bench.cluster`` runs for real with tiny numbers (one round, every set-up), so it cannot rot.

Nothing here asserts a speed: only that every job of every drain ended, that the three queues sit on three
different primaries and each primary carried one queue's jobs, that one queue in three shards spread its jobs
(and keys) over the three primaries, about a third each, and that every part of the report is there.
"""

from __future__ import annotations

import pytest

from bench import cluster, cluster_bus


@pytest.mark.cluster
def test_cluster_bench_measures_every_setup_and_spreads_three_queues() -> None:
    options = cluster.Options(rounds=1, jobs=60, spread_jobs=40, rt_requests=4)
    results = cluster.run(options)

    setups = [d.setup for d in results.drains]
    ones = (cluster.SINGLE, cluster.CLUSTER, cluster.CLUSTER_HOME)
    one_queue = (cluster.ONE_QUEUE_S1, cluster.ONE_QUEUE_S3)
    assert sorted(setups) == sorted([*ones, cluster.SINGLE_X3, cluster.CLUSTER_X3, *one_queue])
    for d in results.drains:
        assert d.verified == d.jobs == (60 if d.setup in ones else 120)
    spread = next(d for d in results.drains if d.setup == cluster.CLUSTER_X3)
    assert sorted(spread.node_jobs.values()) == [40, 40, 40]  # one queue on each of the three primaries
    assert len(set(results.placement.values())) == 3
    for setup in (cluster.CLUSTER, cluster.CLUSTER_HOME):
        one = next(d for d in results.drains if d.setup == setup)
        assert sorted(one.node_jobs.values()) == [0, 0, 60]  # one deployment: one primary holds its queue
    assert results.url_node in results.placement.values()

    # One queue in three shards, on three primaries: each carried about a third of its jobs (uuids spread by crc16:
    # 40 +- 5.2 of 120, so 20 to 60 is about 4 sigma) and holds about a third of its keys; with one shard, one did.
    shard_nodes = [v for k, v in results.shard_placement.items() if not k.endswith("(S=1)")]
    assert len(shard_nodes) == len(set(shard_nodes)) == 3
    sharded = next(d for d in results.drains if d.setup == cluster.ONE_QUEUE_S3)
    assert all(20 <= jobs <= 60 for jobs in sharded.node_jobs.values()), sharded.node_jobs
    assert sum(sharded.node_jobs.values()) == 120
    total_keys = sum(sharded.node_keys.values())
    assert all(total_keys / 6 <= n <= total_keys / 2 for n in sharded.node_keys.values()), sharded.node_keys
    unsharded = next(d for d in results.drains if d.setup == cluster.ONE_QUEUE_S1)
    assert sorted(unsharded.node_jobs.values()) == [0, 0, 120]
    assert spread.replica_cpu > 0  # each primary's replica was found (and replicates the queue)
    assert all(cpu > 0 for cpu in spread.node_cpu.values())
    trips = {(r.setup, r.arrival): len(r.ms) for r in results.round_trips}
    assert trips == {(s, a): 4 for s in (*ones, *one_queue) for a in ("random arrival", "back to back")}

    text = cluster.report(results)
    headings = ("### Drains, every round", "### Round trip over HTTP", "### Balance", "### Ceiling")
    for heading in (*headings, "RELAY_QUEUE_SHARDS=3 against 1", "### Balance: one queue"):
        assert heading in text


@pytest.mark.cluster
def test_cluster_bus_bench_delivers_every_message_on_every_path() -> None:
    results = cluster_bus.run(messages=20, max_pause=0.002)
    assert set(results) == {"PUBLISH, same node", "PUBLISH, other node", "SPUBLISH (slot's primary)"}
    assert all(len(ms) == 20 and min(ms) > 0 for ms, _, _ in results.values())
    # a classic message goes to each of the 5 other nodes, a sharded one at most to the slot's replica
    classic, _, sharded = (bus for _, _, bus in results.values())
    assert classic == 5.0
    assert sharded <= 1.0
    assert "other node" in cluster_bus.report(results)
