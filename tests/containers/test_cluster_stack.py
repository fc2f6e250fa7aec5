"""The compose profile `cluster` on real containers, from nothing: six Redis nodes that the one-shot init forms into
three primaries with a replica each, an API and two workers in cluster mode on them, a task submitted over HTTP
and streamed to its `end`, and the task's keys on the primary that serves the queue's slot and on its replica."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness.processes import wait_until
from tests.containers import measure
from tests.containers.compose import Stack, compose_project
from tests.containers.conftest import UP_SECONDS
from tests.containers.engine import Engine
from tests.containers.relay_http import RelayHttp, types

PROJECT = "relay-container-test-cluster"
NODES = [f"redis-node-{n}" for n in range(1, 7)]
RELAY_SERVICES = {"api-cluster": 1, "worker-cluster": 2}
SLOTS = 16384
PROBE = Path(__file__).with_name("cluster_probe.py")
REPLICATION_SECONDS = 15


@pytest.fixture
def cluster(engine: Engine, relay_image: str, artifacts: Path) -> Iterator[Stack]:
    """The profile as its own Compose project, with its own Relay and admin passwords; removed pass or fail."""
    with compose_project(
        engine,
        artifacts,
        PROJECT,
        relay_image,
        "RELAY_CLUSTER_API_PUBLISH",
        profiles=("cluster",),
        secrets_env=("REDIS_CLUSTER_ADMIN_PASSWORD",),
    ) as project:
        yield project


def probe(cluster: Stack, task_id: str) -> dict[str, Any]:
    """What each node holds of the task, read from inside the API container (cluster_probe.py)."""
    (api,) = cluster.containers("api-cluster", stopped=False)
    run = cluster.engine.run("exec", "-i", api["Id"], "python", "-", task_id, stdin=PROBE.read_text(), timeout=60)
    report: dict[str, Any] = json.loads(run.stdout)
    return report


def test_the_cluster_profile_runs_a_task_on_three_primaries_with_replicas(cluster: Stack) -> None:
    with measure.timed("cluster profile up from nothing (6 nodes, init, API, 2 workers healthy), s"):
        # The documented command: `--profile cluster up api-cluster worker-cluster`; Compose starts the nodes and
        # the init first (depends_on), and only the init's exit 0 lets the API and workers start.
        cluster.up_services(RELAY_SERVICES, {**dict.fromkeys(NODES, 1), **RELAY_SERVICES}, UP_SECONDS)
    (init,) = cluster.containers("redis-cluster-init")
    assert (init["State"]["Status"], init["State"]["ExitCode"]) == ("exited", 0)
    assert cluster.containers("redis") == cluster.containers("api") == [], "the default stack stays down"

    task_id = f"cluster-{uuid.uuid4().hex}"
    with RelayHttp(cluster.api_base, cluster.api_key) as relay:
        with measure.timed("cluster profile: submit and stream `count` to end, s"):
            status, events = relay.submit_and_stream("count", task_id, kwargs={"n": 3})
        assert status == 200
        assert types(events) == ["started", "partial", "partial", "partial", "result", "end"]
        assert events[-1]["data"]["state"] == "succeeded"
        assert relay.state(task_id)["state"] == "succeeded"

    # Replication is asynchronous: wait until the replica holds what the primary holds of the task.
    reports: list[dict[str, Any]] = []

    def replicated() -> bool:
        report = probe(cluster, task_id)
        reports.append(report)
        keys = [k for k in report["keys"].values() if k]
        return len(keys) == 2 and keys[0] == keys[1]

    try:
        wait_until(replicated, REPLICATION_SECONDS, "the task's keys on a primary and its replica", interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last probe: {reports[-1:]}") from exc
    report = reports[-1]

    assert report["info"] == {"cluster_state": "ok", "cluster_size": "3", "cluster_known_nodes": "6"}
    nodes = report["nodes"]
    assert sorted(n["host"] for n in nodes) == NODES, "each node announces its service name"
    assert {n["link"] for n in nodes} == {"connected"}
    primaries = {n["id"]: n for n in nodes if n["role"] == "primary"}
    replicas = [n for n in nodes if n["role"] == "replica"]
    assert len(primaries) == len(replicas) == 3
    assert sorted(r["follows"] for r in replicas) == sorted(primaries), "one replica for each primary"
    ranges = sorted(tuple(r) for p in primaries.values() for r in p["slots"])
    served = [slot for first, last in ranges for slot in range(first, last + 1)]
    assert served == list(range(SLOTS)), f"the primaries must serve every slot once: {ranges}"

    # The queue's hash tag puts every key of the task in one slot: on the primary serving it and on its replica.
    (owner,) = [p for p in primaries.values() if any(a <= report["slot"] <= b for a, b in p["slots"])]
    (replica,) = [r for r in replicas if r["follows"] == owner["id"]]
    holding = {host for host, keys in report["keys"].items() if keys}
    assert holding == {owner["host"], replica["host"]}
    task_keys = report["keys"][owner["host"]]
    for kind in ("relay:events:", "arq:result:"):  # the task's event log and its result (ids carry the key's name)
        assert any(kind in key for key in task_keys), (kind, task_keys)
    assert report["replication"][owner["host"]]["role"] == "master"
    assert report["replication"][replica["host"]] == {"role": "slave", "master_link_status": "up"}

    with measure.timed("cluster profile down -v, s"):
        cluster.down()
