"""Redis Cluster pub/sub alone, without Relay: a PUBLISH's delivery to a subscriber on the same node against one
on another node (the message then crosses the cluster bus), at random arrival.

Usage: .venv/bin/python -m bench.cluster_bus [--messages 1000] [--max-pause-ms 20]

Starts a private six-node cluster (3 primaries, 3 replicas), subscribes on the first node, and publishes one
message at a time, after a uniform 0 to ``--max-pause-ms`` pause, on that node and then on another; prints
p50/p99/max and how many took over 20 ms. ``bench.cluster`` found Relay's round trip slow now and then when its
queue's primary was not the node its subscriptions sit on: this tells whether Redis alone does that. A third
case is sharded pub/sub, as Relay uses on a cluster: ``SSUBSCRIBE`` and ``SPUBLISH`` on the primary of the
channel's slot. ``bus msgs each``: the pub/sub messages the nodes sent each other over the cluster bus per
message published (``CLUSTER INFO``: classic ``PUBLISH`` goes to every other node, ``SPUBLISH`` to the
slot's replicas only).
"""

from __future__ import annotations

import argparse
import random
import time

import redis

from bench.common import OtherLoad, bench_scope, percentile, table
from bench.harness.redis_servers import Cluster, Server, start_cluster

SLOW_MS = 20.0


def deliveries(
    subscriber: Server, publisher: Server, messages: int, max_pause: float, sharded: bool = False
) -> list[float]:
    """Milliseconds from each PUBLISH (SPUBLISH if ``sharded``, on ``publisher``) until ``subscriber``'s client has
    the message."""
    with redis.Redis(port=subscriber.port) as sub_client, redis.Redis(port=publisher.port) as pub:
        sub = sub_client.pubsub()
        if sharded:
            sub.ssubscribe("bench:bus")
        else:
            sub.subscribe("bench:bus")
        if sub.get_message(timeout=5) is None:
            raise RuntimeError("no subscribe confirmation")
        ms = []
        try:
            for _ in range(messages):
                time.sleep(random.uniform(0, max_pause))  # random arrival, not synchronisation
                start = time.perf_counter()
                pub.execute_command("SPUBLISH" if sharded else "PUBLISH", "bench:bus", "x")
                if sub.get_message(timeout=5) is None:
                    raise RuntimeError("a published message never arrived")
                ms.append((time.perf_counter() - start) * 1000)
        finally:
            sub.close()
    return ms


def bus_messages(cluster: Cluster) -> int:
    """Pub/sub messages the nodes sent each other over the cluster bus so far (classic and sharded)."""
    sent = 0
    for server in cluster.servers:
        with cluster.node_client(server) as client:
            info = client.execute_command("CLUSTER", "INFO").decode()
        for line in info.splitlines():
            if line.startswith(("cluster_stats_messages_publish_sent:", "cluster_stats_messages_publishshard_sent:")):
                sent += int(line.split(":")[1])
    return sent


def slot_owner(cluster: Cluster) -> Server:
    """The primary that holds the channel's slot (SPUBLISH and SSUBSCRIBE are served there only)."""
    with cluster.node_client(cluster.servers[0]) as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", "bench:bus"))
        port = next(int(r[2][1]) for r in client.execute_command("CLUSTER", "SLOTS") if r[0] <= slot <= r[1])
    return next(server for server in cluster.servers if server.port == port)


Result = tuple[list[float], float, float]


def run(messages: int, max_pause: float) -> dict[str, Result]:
    """Delivery times, other processes' cores and bus messages per message: classic on the same node and on
    another node, then sharded (on the channel's slot's primary)."""
    out: dict[str, Result] = {}
    with bench_scope() as bench:
        cluster = start_cluster(bench.log_dir, primaries=3, replicas=1)
        bench.stack.callback(cluster.stop)
        owner = slot_owner(cluster)
        cases = (
            ("PUBLISH, same node", cluster.servers[0], cluster.servers[0], False),
            ("PUBLISH, other node", cluster.servers[0], cluster.servers[1], False),
            ("SPUBLISH (slot's primary)", owner, owner, True),
        )
        for label, subscriber, publisher, sharded in cases:
            others, bus = OtherLoad(), bus_messages(cluster)
            ms = deliveries(subscriber, publisher, messages, max_pause, sharded)
            out[label] = (ms, others.cores(), (bus_messages(cluster) - bus) / messages)
    return out


def report(results: dict[str, Result]) -> str:
    rows = [
        [
            label,
            len(ms),
            f"{percentile(ms, 50):.2f}",
            f"{percentile(ms, 99):.2f}",
            f"{max(ms):.1f}",
            sum(v > SLOW_MS for v in ms),
            f"{bus:.1f}",
            f"{others:.2f}",
        ]
        for label, (ms, others, bus) in results.items()
    ]
    heads = ["publisher", "messages", "p50 ms", "p99 ms", "max ms", f"over {SLOW_MS:.0f} ms", "bus msgs each"]
    heads.append("others (cores)")
    return table(heads, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--max-pause-ms", type=float, default=20.0)
    args = parser.parse_args()
    print(report(run(args.messages, args.max_pause_ms / 1000)))


if __name__ == "__main__":
    main()
