"""deploy/redis-cluster/node.sh, the compose profile `cluster`'s node and init script, run for real: six local
redis-servers on loopback joined by its `create`, under busybox ash (the official image is Alpine)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from bench.harness.processes import ManagedProcess, free_port, relay_env, start_api, start_worker, wait_until
from tests.deploy import tools

SCRIPT = tools.REPO / "deploy" / "redis-cluster" / "node.sh"
SHELL = ["busybox", "sh"]
EX_CONFIG = 64
ANNOUNCED = "localhost"  # what each node reports as its endpoint; the compose nodes announce their service name


@dataclass
class Cluster:
    ports: list[int]
    env: dict[str, str]
    directories: list[Path]
    processes: list[ManagedProcess]

    def start(self) -> None:
        """node.sh serve for each directory on its port (a fresh bus port each time); back once all answer."""
        for port, directory in zip(self.ports, self.directories, strict=True):
            argv = [*SHELL, str(SCRIPT), "serve", "--port", str(port), "--cluster-port", str(free_port())]
            argv += ["--bind", "127.0.0.1", "--dir", str(directory), "--appendonly", "yes", "--save", ""]
            env = {**self.env, "REDIS_PORT": str(port)}
            self.processes.append(ManagedProcess("cluster-node", argv, env, directory))
        for port in self.ports:
            env = {**self.env, "REDIS_PORT": str(port)}
            wait_until(lambda e=env: run([str(SCRIPT), "check", "PONG"], e).returncode == 0, 10, "a node's PONG")

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes.clear()

    @property
    def password(self) -> str:
        return str(urlparse(self.env["RELAY_REDIS_URL"]).password)

    @property
    def admin_password(self) -> str:
        return self.env["REDIS_CLUSTER_ADMIN_PASSWORD"]

    def node(self, port: int, user: str = "relay") -> redis.Redis:
        password = self.admin_password if user == "relay-admin" else self.password
        return redis.Redis(host="127.0.0.1", port=port, username=user, password=password, socket_timeout=5)

    def create(self) -> subprocess.CompletedProcess[str]:
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        return run([str(SCRIPT), "create", "1", *nodes], self.env, timeout=120)


def run(args: list[str], env: dict[str, str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHELL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def script_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "REDIS"))}
    return {**env, **values}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which(SHELL[0]) is None:
        pytest.fail("busybox is not installed (apt-get install busybox; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("redis-cluster")
    ports = [free_port() for _ in range(6)]
    env = script_env(
        RELAY_REDIS_URL=f"redis://relay:{secrets.token_hex(16)}@127.0.0.1:{ports[0]}/0",
        REDIS_CLUSTER_ADMIN_PASSWORD=secrets.token_hex(16),
        REDIS_CLUSTER_ANNOUNCE_HOSTNAME=ANNOUNCED,
    )
    directories = [tmp / f"node-{i}" for i in range(len(ports))]
    for directory in directories:
        directory.mkdir()
    found = Cluster(ports, env, directories, [])
    try:
        found.start()
        created = found.create()
        assert created.returncode == 0, created.stdout + created.stderr
        yield found
    finally:
        found.stop()


def cluster_nodes(cluster: Cluster) -> list[list[str]]:
    """CLUSTER NODES of the first node, one split line per node."""
    with cluster.node(cluster.ports[0]) as client:
        text = client.execute_command("CLUSTER", "NODES")
    text = text.decode() if isinstance(text, bytes) else str(text)
    return [line.split() for line in text.splitlines() if line.strip()]


def node_ids_and_roles(cluster: Cluster) -> list[tuple[str, str, str]]:
    """(id, role, primary id) of every node, as the first node sees them."""
    return sorted((line[0], line[2].replace("myself,", ""), line[3]) for line in cluster_nodes(cluster))


def test_create_makes_three_primaries_each_with_a_replica(cluster: Cluster) -> None:
    lines = cluster_nodes(cluster)
    primaries = {line[0]: line for line in lines if "master" in line[2]}
    replicas = [line for line in lines if "slave" in line[2]]
    assert len(primaries) == 3
    assert len(replicas) == 3
    assert sorted(line[3] for line in replicas) == sorted(primaries), "each primary gets exactly one replica"
    slots = 0
    for line in primaries.values():
        for span in line[8:]:
            first, _, last = span.partition("-")
            slots += int(last or first) - int(first) + 1
    assert slots == 16384
    for line in replicas:
        port = int(line[1].split("@")[0].rsplit(":", 1)[1])
        with cluster.node(port) as client:
            # The first sync runs after create returns: poll, bounded. Replicas replicate as the admin user.
            wait_until(lambda c=client: c.info("replication")["master_link_status"] == "up", 30, "a replica's sync")


def test_create_again_changes_nothing(cluster: Cluster) -> None:
    before = node_ids_and_roles(cluster)
    again = cluster.create()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "not creating the cluster again" in again.stdout
    assert node_ids_and_roles(cluster) == before


def test_nodes_announce_their_hostname_to_clients(cluster: Cluster) -> None:
    with cluster.node(cluster.ports[0]) as client:
        layout = client.execute_command("CLUSTER", "SLOTS")
    endpoints = {(entry[2][0].decode() if isinstance(entry[2][0], bytes) else entry[2][0]) for entry in layout}
    assert endpoints == {ANNOUNCED}


def test_relays_user_runs_a_tagged_script_through_the_cluster_client(cluster: Cluster) -> None:
    """What Relay needs on a cluster (CLUSTER SLOTS, COMMAND, scripts with one slot's keys), as its ACL user."""
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], username="relay", password=cluster.password)
    try:
        keys = ["{relay:q}:a", "{relay:q}:b"]
        script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[1])"
        assert client.eval(script, 2, *keys, 5) == 5
        assert client.get(keys[0]) == b"5"
    finally:
        client.close()


def test_relays_user_cannot_run_cluster_admin_or_replication_commands(cluster: Cluster) -> None:
    with cluster.node(cluster.ports[0]) as relay:
        for command in (("CLUSTER", "RESET"), ("CLUSTER", "FORGET", "x" * 40), ("FLUSHALL",), ("CONFIG", "GET", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                relay.execute_command(*command)
    anonymous = redis.Redis(host="127.0.0.1", port=cluster.ports[0], socket_timeout=5)
    with anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    for process in cluster.processes:  # both passwords went in on stdin, not on a command line
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_text()
        assert "redis-server" in cmdline, "the script must exec redis-server"
        assert cluster.password not in cmdline
        assert cluster.admin_password not in cmdline


def test_relay_runs_a_task_on_it_as_its_acl_user(cluster: Cluster, tmp_path: Path) -> None:
    """The profile's API and worker (RELAY_REDIS_CLUSTER=true, the URL naming one node) need nothing of Relay's
    user that the ACL withholds: a task submitted over HTTP runs and its result streams back."""
    env = relay_env(cluster.env["RELAY_REDIS_URL"], RELAY_REDIS_CLUSTER="true", RELAY_QUEUE_NAME="relay:queue")
    worker = start_worker(tmp_path, env)
    api, base = start_api(tmp_path, env)
    try:
        response = httpx.post(
            f"{base}/tasks",
            json={"task": "count", "kwargs": {"n": 3}},
            headers={"Accept": "application/x-ndjson"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        events = [json.loads(line) for line in response.text.splitlines() if line]
        assert [e["data"] for e in events if e["type"] == "result"] == [{"count": 3, "sum": 6}]
        assert events[-1]["data"] == {"state": "succeeded"}
    finally:
        api.stop()
        worker.stop()
    for process in (api, worker):
        assert "NOPERM" not in process.output(), process.name


def test_create_finds_the_nodes_again_when_every_address_changed(cluster: Cluster) -> None:
    """`docker compose down` + `up` may give every container a new IP: each nodes.conf then names its peers at
    addresses where nobody answers. Here every node comes back on a new port; create re-introduces them."""
    before = node_ids_and_roles(cluster)
    kept = [f"{{relay:{i}}}:kept" for i in range(30)]
    assert {key_slot(key.encode()) * 3 // 16384 for key in kept} == {0, 1, 2}, "keys on each primary's third"
    with RedisCluster(host="127.0.0.1", port=cluster.ports[0], username="relay", password=cluster.password) as c:
        for key in kept:
            c.set(key, "yes")
    cluster.stop()
    cluster.ports[:] = [free_port() for _ in cluster.ports]
    cluster.start()
    again = cluster.create()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "not creating the cluster again" in again.stdout
    assert node_ids_and_roles(cluster) == before, "the same six nodes, primaries and replicas"
    for port in cluster.ports:  # each node lists all six at their new ports, links up: none is lost
        with cluster.node(port) as client:
            text = client.execute_command("CLUSTER", "NODES")
        lines = [line.split() for line in (text.decode() if isinstance(text, bytes) else str(text)).splitlines()]
        listed = {int(line[1].split("@")[0].rsplit(":", 1)[1]) for line in lines if line[7] == "connected"}
        assert listed == set(cluster.ports), port
    with RedisCluster(host="127.0.0.1", port=cluster.ports[0], username="relay", password=cluster.password) as c:
        assert [c.get(key) for key in kept] == [b"yes"] * len(kept), "the data came back from each node's AOF"


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"REDIS_CLUSTER_ADMIN_PASSWORD": ""}, "REDIS_CLUSTER_ADMIN_PASSWORD is not set"),
        ({"REDIS_CLUSTER_ADMIN_PASSWORD": "short"}, "shorter than 16"),
        ({"REDIS_CLUSTER_ADMIN_PASSWORD": "0123456789abcdef$"}, "only letters, digits"),
        ({"RELAY_REDIS_URL": "redis://relay:@redis-node-1:6379/0"}, "RELAY_REDIS_PASSWORD is not set"),
        ({"RELAY_REDIS_URL": "redis://redis-node-1:6379/0"}, "must carry credentials"),
        ({"RELAY_REDIS_URL": "redis://relay-admin:0123456789abcdef0123@redis-node-1:6379/0"}, "must be a name"),
        ({"REDIS_CLUSTER_ADMIN_PASSWORD": "0123456789abcdef0123"}, "must differ"),
        ({"REDIS_CLUSTER_ANNOUNCE_HOSTNAME": ""}, "REDIS_CLUSTER_ANNOUNCE_HOSTNAME"),
    ],
)
def test_no_usable_secret_means_no_node(changes: dict[str, str], complaint: str) -> None:
    env = script_env(
        RELAY_REDIS_URL="redis://relay:0123456789abcdef0123@redis-node-1:6379/0",
        REDIS_CLUSTER_ADMIN_PASSWORD="abcdefabcdef01234567",
        REDIS_CLUSTER_ANNOUNCE_HOSTNAME="redis-node-1",
        REDIS_PORT=str(free_port()),
    )
    result = run([str(SCRIPT), "serve"], {**env, **changes})
    assert (result.returncode, complaint in result.stderr) == (EX_CONFIG, True), result.stderr
