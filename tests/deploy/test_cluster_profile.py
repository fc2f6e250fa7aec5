"""The compose profile `cluster`: a six-node Redis Cluster (3 primaries, 3 replicas), and an API and workers on it.

Offline, like every deploy test: nothing here pulls an image or starts a container. The node script itself runs
for real against local redis-servers in tests/deploy/test_redis_cluster_script.py.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from shared.settings import Settings
from tests.deploy import contract, tools
from tests.deploy.manifests import resolve

PROFILE = "cluster"
NODE_SCRIPT = tools.REPO / "deploy" / "redis-cluster" / "node.sh"
NODE_SCRIPT_MOUNT = "/etc/relay-redis/node.sh"
NODES = 6
REDIS_PORT = 6379
PASSWORD = "0123456789abcdef0123"

Service = dict[str, Any]


def env_of(service: Service) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def profiled(compose: dict[str, Any]) -> dict[str, Service]:
    return {name: s for name, s in compose["services"].items() if PROFILE in s.get("profiles", [])}


def nodes(compose: dict[str, Any]) -> dict[str, Service]:
    """The services that run a cluster node: node.sh serve."""
    serve = ["sh", NODE_SCRIPT_MOUNT, "serve"]
    return {n: s for n, s in profiled(compose).items() if s.get("command", [])[:3] == serve}


def init(compose: dict[str, Any]) -> tuple[str, Service]:
    (found,) = [(n, s) for n, s in profiled(compose).items() if s["command"][:3] == ["sh", NODE_SCRIPT_MOUNT, "create"]]
    return found


def relay_services(compose: dict[str, Any]) -> dict[str, Service]:
    """The API and workers of the profile: they run the image's commands."""
    commands = (contract.API_COMMAND, contract.WORKER_COMMAND)
    return {n: s for n, s in profiled(compose).items() if s.get("command") in commands}


def settings_of(service: Service, env: dict[str, str] | None = None) -> Settings:
    values = {k.removeprefix("RELAY_").lower(): resolve(v, env) for k, v in env_of(service).items()}
    return Settings.model_validate({k: v for k, v in values.items() if k in Settings.model_fields})


# --- the nodes -----------------------------------------------------------------------------------------------


def test_the_profile_runs_six_nodes_each_announcing_its_own_name(compose: dict[str, Any]) -> None:
    found = nodes(compose)
    assert len(found) == NODES
    for name, node in found.items():
        # Clients on the compose network reach a node by its service name; the node announces exactly that.
        assert env_of(node)["REDIS_CLUSTER_ANNOUNCE_HOSTNAME"] == name
        assert node["healthcheck"]["test"] == ["CMD", "sh", NODE_SCRIPT_MOUNT, "check", "PONG"]


def test_nodes_run_the_repository_script_and_keep_their_data(compose: dict[str, Any]) -> None:
    volumes_seen = set()
    for name, node in nodes(compose).items():
        mounts = {v.split(":")[1]: v.split(":") for v in node["volumes"]}
        source, _, mode = mounts[NODE_SCRIPT_MOUNT]
        assert (tools.REPO / source).resolve() == NODE_SCRIPT.resolve(), name
        assert source.startswith("./"), f"{name}: a bare name would be a named volume, not the file"
        assert mode == "ro", name
        volume = mounts["/data"][0]  # the AOF and nodes.conf: a restarted node keeps its identity and slots
        assert volume in compose["volumes"], f"{name}: /data must be a named volume"
        volumes_seen.add(volume)
        command = node["command"]
        assert command[command.index("--appendonly") + 1] == "yes", name
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction", name
    assert len(volumes_seen) == NODES, "each node needs its own volume"


def test_nodes_are_locked_down_like_the_single_redis(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    for name, service in {**nodes(compose), init(compose)[0]: init(compose)[1]}.items():
        for key in ("image", "user", "read_only", "tmpfs", "cap_drop", "security_opt"):
            assert service[key] == redis[key], f"{name}.{key} differs from the single Redis's"


# --- forming the cluster -------------------------------------------------------------------------------------


def test_the_init_creates_the_cluster_of_all_nodes_with_one_replica_each(compose: dict[str, Any]) -> None:
    service = init(compose)[1]
    command = service["command"]
    assert command[3] == "1", "--cluster-replicas 1: three primaries, three replicas"
    assert sorted(command[4:]) == sorted(f"{node}:{REDIS_PORT}" for node in nodes(compose))
    assert service["depends_on"] == {node: {"condition": "service_healthy"} for node in nodes(compose)}
    assert service["restart"] == "no", "a one-shot: restarting it would loop"
    text = NODE_SCRIPT.read_text()
    assert "--cluster create" in text
    assert '--cluster-replicas "$replicas" --cluster-yes' in text


def test_the_init_forms_the_cluster_only_once(compose: dict[str, Any]) -> None:
    """Idempotent on every `up`: the script skips create when the first node already knows other nodes (run
    for real, twice, in test_redis_cluster_script.py)."""
    text = NODE_SCRIPT.read_text()
    assert re.search(r'if \[ "\$known" -gt 1 \]; then\n\s+echo "[^"]*not creating the cluster again"', text)


def test_relay_starts_only_once_the_cluster_is_formed(compose: dict[str, Any]) -> None:
    name = init(compose)[0]
    awaited_healthy = {
        target
        for service in compose["services"].values()
        for target, dependency in service.get("depends_on", {}).items()
        if dependency["condition"] == "service_healthy"
    }
    assert name not in awaited_healthy, "the init has no healthcheck; it runs to completion"
    assert init(compose)[1]["healthcheck"] == {"disable": True}
    for relay_name, service in relay_services(compose).items():
        assert service["depends_on"] == {name: {"condition": "service_completed_successfully"}}, relay_name


# --- the API and workers on the cluster ---------------------------------------------------------------------


def test_an_api_and_workers_run_in_cluster_mode_against_a_node(compose: dict[str, Any]) -> None:
    services = relay_services(compose)
    commands = sorted(tuple(s["command"]) for s in services.values())
    assert commands == sorted([tuple(contract.API_COMMAND), tuple(contract.WORKER_COMMAND)])
    for name, service in services.items():
        settings = settings_of(service, {"RELAY_REDIS_PASSWORD": PASSWORD})
        assert settings.redis_cluster is True, name
        url = urlparse(settings.redis_url)
        assert url.hostname in nodes(compose), f"{name}: the URL must name a node; the client finds the rest"
        assert (url.scheme, url.port, url.username, url.password) == ("redis", REDIS_PORT, "relay", PASSWORD)


def test_nodes_take_relays_user_from_the_url_relay_connects_with(compose: dict[str, Any]) -> None:
    """node.sh makes Relay's ACL user from RELAY_REDIS_URL, as redis.sh does on the single Redis."""
    urls = {env_of(s)["RELAY_REDIS_URL"] for s in profiled(compose).values()}
    assert len(urls) == 1, urls


def test_the_cluster_api_and_workers_are_the_stacks_own(compose: dict[str, Any]) -> None:
    """Same image, hardening, checks and settings as the default API and workers; only Redis differs."""
    default = compose["services"]
    for name, service in relay_services(compose).items():
        twin = default["api" if service["command"] == contract.API_COMMAND else "worker"]
        for key in ("image", "build", "healthcheck", "read_only", "tmpfs", "cap_drop", "security_opt", "restart"):
            assert service[key] == twin[key], f"{name}.{key}"
        assert service["stop_grace_period"] == twin["stop_grace_period"], name
        theirs, ours = env_of(twin), env_of(service)
        differs = {k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k)}
        assert differs == {"RELAY_REDIS_URL", "RELAY_REDIS_CLUSTER"}, name
        assert twin.get("deploy") == service.get("deploy"), name


def test_the_cluster_api_is_published_on_loopback_beside_the_default_one(compose: dict[str, Any]) -> None:
    (api,) = [s for s in relay_services(compose).values() if s["command"] == contract.API_COMMAND]
    (published,) = api["ports"]
    assert resolve(published) == f"127.0.0.1:8001:{contract.PORT}"
    (default,) = compose["services"]["api"]["ports"]
    assert resolve(default).split(":")[1] != resolve(published).split(":")[1], "both stacks can run at once"


# --- secrets, and the default stack ---------------------------------------------------------------------------


def test_no_secret_is_written_into_the_profile(compose: dict[str, Any]) -> None:
    for name, service in profiled(compose).items():
        env = env_of(service)
        assert urlparse(env["RELAY_REDIS_URL"]).password == "${RELAY_REDIS_PASSWORD:-}", name
        assert env.get("RELAY_API_KEYS") in (None, "${RELAY_API_KEYS:-}"), name
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|TOKEN|KEYS", key):
                assert re.fullmatch(rf"\$\{{{key}(:?-)?\}}", value), f"{name}.{key} must come from the environment"
                assert resolve(value) == "", f"{name}.{key}: a default would be a committed secret"


def test_the_admin_password_reaches_only_the_nodes_and_the_init(compose: dict[str, Any]) -> None:
    """Relay's processes get Relay's user only; the admin (replication, CLUSTER commands) stays with Redis."""
    holders = {n for n, s in compose["services"].items() if "REDIS_CLUSTER_ADMIN_PASSWORD" in env_of(s)}
    assert holders == {*nodes(compose), init(compose)[0]}


def test_the_default_stack_is_untouched(compose: dict[str, Any]) -> None:
    default = {name: s for name, s in compose["services"].items() if not s.get("profiles")}
    assert set(default) == {"redis", "api", "worker"}
    for name, service in default.items():
        assert set(service.get("depends_on", {})) <= set(default), name
        assert "RELAY_REDIS_CLUSTER" not in env_of(service), name
        assert urlparse(resolve(env_of(service)["RELAY_REDIS_URL"])).hostname == "redis", name
    for name, service in profiled(compose).items():
        assert service["profiles"] == [PROFILE], name
        for target in service.get("depends_on", {}):
            assert target in profiled(compose), f"{name} must not need the default stack's {target}"
