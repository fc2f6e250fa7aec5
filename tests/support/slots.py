"""Moving one hash slot between a local cluster's primaries, as ``redis-cli --cluster reshard`` does for each slot:
for tests of what a client sees when its slot changes owner (a sharded subscription is ended by the old owner)."""

from __future__ import annotations

import time
from typing import Any

import redis


def primaries(port: int) -> dict[str, int]:
    """The cluster's primaries that the node on ``port`` knows: node id -> port."""
    with redis.Redis(port=port, socket_timeout=5) as client:
        lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
    found = {}
    for line in lines:
        fields = line.split()
        if "master" in fields[2].split(",") and "fail" not in fields[2]:
            found[fields[0]] = int(fields[1].split("@")[0].rsplit(":", 1)[1])
    return found


def owner(port: int, slot: int) -> int:
    """The port of the primary that holds ``slot``, as the node on ``port`` sees it."""
    with redis.Redis(port=port, socket_timeout=5) as client:
        for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return int(primary[1])
    raise AssertionError(f"slot {slot} is not served")


def _run(port: int, *command: object) -> Any:
    with redis.Redis(port=port, socket_timeout=5) as client:
        return client.execute_command(*command)


def move(port: int, slot: int, to: int, timeout: float = 15) -> None:
    """Move ``slot`` (with its keys) to the primary on port ``to``, then wait until every primary says so.
    ``port``: any node of the cluster. Nothing to do if ``to`` holds it already."""
    nodes = primaries(port)
    source = owner(port, slot)
    if source == to:
        return
    ids = {p: node_id for node_id, p in nodes.items()}
    _run(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    _run(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to])
    while batch := _run(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
        _run(source, "MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *batch)
    for p in [to, source, *(p for p in nodes.values() if p not in (to, source))]:
        _run(p, "CLUSTER", "SETSLOT", slot, "NODE", ids[to])
    deadline = time.monotonic() + timeout
    while any(owner(p, slot) != to for p in nodes.values()):
        assert time.monotonic() < deadline, f"the primaries do not agree that slot {slot} moved to {to}"
        time.sleep(0.05)
