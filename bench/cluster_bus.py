"""Redis Cluster pub/sub alone, without Relay: a PUBLISH's delivery to a subscriber on the same node against one
on another node (the message then crosses the cluster bus), at random arrival.

Usage: .venv/bin/python -m bench.cluster_bus [--messages 1000] [--max-pause-ms 20]

Starts a private six-node cluster (3 primaries, 3 replicas), subscribes on the first node, and publishes one
message at a time, after a uniform 0 to ``--max-pause-ms`` pause, on that node and then on another; prints
p50/p99/max and how many took over 20 ms. ``bench.cluster`` found Relay's round trip slow now and then when its
queue's primary was not the node its subscriptions sit on: this tells whether Redis alone does that.
"""

from __future__ import annotations

import argparse
import random
import time

import redis

from bench.common import OtherLoad, bench_scope, percentile, table
from bench.harness.redis_servers import Server, start_cluster

SLOW_MS = 20.0


def deliveries(subscriber: Server, publisher: Server, messages: int, max_pause: float) -> list[float]:
    """Milliseconds from each PUBLISH (on ``publisher``) until ``subscriber``'s client has the message."""
    with redis.Redis(port=subscriber.port) as sub_client, redis.Redis(port=publisher.port) as pub:
        sub = sub_client.pubsub()
        sub.subscribe("bench:bus")
        if sub.get_message(timeout=5) is None:
            raise RuntimeError("no subscribe confirmation")
        ms = []
        try:
            for _ in range(messages):
                time.sleep(random.uniform(0, max_pause))  # random arrival, not synchronisation
                start = time.perf_counter()
                pub.publish("bench:bus", "x")
                if sub.get_message(timeout=5) is None:
                    raise RuntimeError("a published message never arrived")
                ms.append((time.perf_counter() - start) * 1000)
        finally:
            sub.close()
    return ms


def run(messages: int, max_pause: float) -> dict[str, tuple[list[float], float]]:
    """Delivery times and other processes' cores, same node and other node."""
    out: dict[str, tuple[list[float], float]] = {}
    with bench_scope() as bench:
        cluster = start_cluster(bench.log_dir, primaries=3, replicas=1)
        bench.stack.callback(cluster.stop)
        for label, publisher in (("same node", cluster.servers[0]), ("other node", cluster.servers[1])):
            others = OtherLoad()
            ms = deliveries(cluster.servers[0], publisher, messages, max_pause)
            out[label] = (ms, others.cores())
    return out


def report(results: dict[str, tuple[list[float], float]]) -> str:
    rows = [
        [
            label,
            len(ms),
            f"{percentile(ms, 50):.2f}",
            f"{percentile(ms, 99):.2f}",
            f"{max(ms):.1f}",
            sum(v > SLOW_MS for v in ms),
            f"{others:.2f}",
        ]
        for label, (ms, others) in results.items()
    ]
    heads = ["publisher", "messages", "p50 ms", "p99 ms", "max ms", f"over {SLOW_MS:.0f} ms", "others (cores)"]
    return table(heads, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--max-pause-ms", type=float, default=20.0)
    args = parser.parse_args()
    print(report(run(args.messages, args.max_pause_ms / 1000)))


if __name__ == "__main__":
    main()
