"""Run INSIDE the cluster profile's API container (``python - <task id>``): where the cluster keeps a task's keys.

It connects to each node separately (plain clients, no cluster routing) with the container's own RELAY_REDIS_URL,
so it sees what each node really holds, as Relay's user (no admin password crosses into the container). It
prints, as JSON: the cluster's state and layout as redis-node-1 reports it, the slot of the queue's hash tag,
which primary serves that slot and which replica follows it, and the keys naming the task on each node.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import urlparse

import redis

NODES = [f"redis-node-{n}" for n in range(1, 7)]
PORT = 6379


def client(host: str) -> redis.Redis:
    url = urlparse(os.environ["RELAY_REDIS_URL"])
    return redis.Redis(
        host=host, port=PORT, username=url.username, password=url.password, socket_timeout=5, decode_responses=True
    )


def command(node: redis.Redis, *args: str | int) -> Any:
    """A command as two or more words ("CLUSTER", "NODES"): redis-py's parsers, keyed "CLUSTER NODES", then leave
    the reply as Redis sent it."""
    return node.execute_command(*args)  # type: ignore[no-untyped-call]


def layout(nodes_text: str) -> list[dict[str, Any]]:
    """CLUSTER NODES as data: host (the announced hostname), id, role, the primary it follows, its slot ranges."""
    found = []
    for line in nodes_text.splitlines():
        fields = line.split()
        address, flags = fields[1], fields[2].split(",")
        ranges = [[int(r.split("-")[0]), int(r.split("-")[-1])] for r in fields[8:] if not r.startswith("[")]
        found.append(
            {
                "host": address.split(",")[1] if "," in address else address.split(":")[0],
                "id": fields[0],
                "role": "primary" if "master" in flags else "replica",
                "follows": fields[3] if fields[3] != "-" else None,
                "link": fields[7],
                "slots": ranges,
            }
        )
    return found


def main() -> None:
    task_id = sys.argv[1]
    tag = "{relay:" + os.environ["RELAY_QUEUE_NAME"] + "}"
    report: dict[str, Any] = {}
    with client(NODES[0]) as first:
        info = dict(line.split(":", 1) for line in command(first, "CLUSTER", "INFO").split())
        report["info"] = {k: info[k] for k in ("cluster_state", "cluster_size", "cluster_known_nodes")}
        report["nodes"] = layout(command(first, "CLUSTER", "NODES"))
        slot = int(command(first, "CLUSTER", "KEYSLOT", tag))
    report["slot"] = slot
    report["keys"] = {}
    report["replication"] = {}
    for host in NODES:
        with client(host) as node:
            # GETKEYSINSLOT reads the node's own keyspace, so it answers on a replica as on its primary.
            in_slot = command(node, "CLUSTER", "GETKEYSINSLOT", slot, 10_000)
            report["keys"][host] = sorted(key for key in in_slot if task_id in key)
            replication = node.info("replication")
            report["replication"][host] = {k: replication.get(k) for k in ("role", "master_link_status")}
    json.dump(report, sys.stdout)


main()
