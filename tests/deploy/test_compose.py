"""docker-compose.yml is valid Compose and starts the stack in a safe order with safe stop budgets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.deploy import contract, tools
from tests.deploy.manifests import Doc, named, pod_spec, resolve, seconds

COMPOSE_FILE = tools.REPO / "docker-compose.yml"
REDIS_SCRIPT = tools.K8S / "base" / "redis.sh"
REDIS_SCRIPT_MOUNT = "/etc/relay-redis/redis.sh"


def check_compose_schema(path: Path) -> tuple[int, str]:
    """Validate against the Compose Specification JSON schema that check-jsonschema vendors."""
    result = tools.run([tools.tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path])
    return result.returncode, result.stdout + result.stderr


def test_matches_the_compose_specification() -> None:
    code, output = check_compose_schema(COMPOSE_FILE)
    assert code == 0, output


def test_schema_check_rejects_an_invalid_file(tmp_path: Path) -> None:
    """Proves the validator has teeth: a misspelt key and a wrong type both fail."""
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  api:\n    image: x\n    stop_grace_perod: 10s\n    ports: 8000\n")
    code, output = check_compose_schema(bad)
    assert code != 0, output


def test_redis_persists_with_aof_on_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction", "a queue must never evict jobs"
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data"
    assert volume in compose["volumes"], "AOF must live on a named volume"


def test_start_order_is_gated_on_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    awaited = {
        target
        for service in services.values()
        for target, dependency in service.get("depends_on", {}).items()
        if dependency["condition"] == "service_healthy"
    }
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck; depends_on could not wait for it"
        # An image with no way to probe itself (the Service Bus emulator has no shell) may say so, explicitly,
        # as long as nothing waits for it to turn healthy: that wait would never end.
        if service["healthcheck"].get("disable") is True:
            assert name not in awaited, f"{name} has its healthcheck disabled, yet a service waits for it"
        else:
            assert service["healthcheck"]["test"], name


def test_healthchecks_use_tools_the_images_have(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # An authenticated PING (redis.sh check, over redis-cli) that must answer PONG, not LOADING.
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "sh", REDIS_SCRIPT_MOUNT, "check", "PONG"]
    api_test = services["api"]["healthcheck"]["test"]
    assert api_test[:3] == ["CMD", "python", "-c"], "the slim image has no curl; use python's urllib"
    assert "urllib.request.urlopen('http://127.0.0.1:8000/health/ready'" in api_test[3]
    assert services["worker"]["healthcheck"]["test"] == ["CMD", *contract.WORKER_CHECK]


def test_at_least_two_workers(compose: dict[str, Any]) -> None:
    assert compose["services"]["worker"]["deploy"]["replicas"] >= 2


def test_api_and_workers_share_one_image(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["image"] == worker["image"]
    assert api["build"] == worker["build"] == {"context": ".", "dockerfile": "Dockerfile"}


def test_containers_are_locked_down(compose: dict[str, Any]) -> None:
    for name in ("api", "worker", "redis"):
        service = compose["services"][name]
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], f"{name}: HOME=/tmp must stay writable"
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_no_secret_value_is_written_into_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        keys = service.get("environment", {}).get("RELAY_API_KEYS")
        assert keys is None or re.fullmatch(r"\$\{RELAY_API_KEYS(:?-)?\}", keys), f"{name}: {keys!r}"
        url = service.get("environment", {}).get("RELAY_REDIS_URL")
        if url is not None:
            assert urlparse(url).password == "${RELAY_REDIS_PASSWORD:-}", f"{name}: the password must be a variable"


def redis_url_users(compose: dict[str, Any]) -> dict[str, str]:
    """Every service on the single Redis given RELAY_REDIS_URL, and what it is given (the profile `cluster` has
    its own Redis and URL: tests/deploy/test_cluster_profile.py)."""
    found = {
        name: s.get("environment", {}).get("RELAY_REDIS_URL")
        for name, s in compose["services"].items()
        if "cluster" not in s.get("profiles", [])
    }
    return {name: url for name, url in found.items() if url is not None}


def test_everyone_reaches_redis_as_relay_with_the_password_from_the_environment(compose: dict[str, Any]) -> None:
    users = redis_url_users(compose)
    assert {"redis", "api", "worker"} <= set(users), "Redis takes its ACL user from the same URL"
    assert len(set(users.values())) == 1, f"one URL for all, or Redis and Relay disagree: {users}"
    (url,) = set(users.values())
    given = urlparse(resolve(url, {"RELAY_REDIS_PASSWORD": "0123456789abcdef0123"}))
    assert (given.scheme, given.hostname, given.port) == ("redis", "redis", 6379)
    assert (given.username, given.password) == ("relay", "0123456789abcdef0123")
    # Unset, the URL has an empty password: redis.sh refuses to start Redis with it (tests/deploy/test_redis_script.py).
    assert urlparse(resolve(url)).password == ""


def test_redis_runs_the_shared_script_as_the_images_redis_user(compose: dict[str, Any], base: list[Doc]) -> None:
    redis = compose["services"]["redis"]
    assert redis["command"][:3] == ["sh", REDIS_SCRIPT_MOUNT, "serve"]
    source, _, mode = next(v for v in redis["volumes"] if v.split(":")[1] == REDIS_SCRIPT_MOUNT).split(":")
    assert (tools.REPO / source).resolve() == REDIS_SCRIPT, "compose must run the script the StatefulSet runs"
    assert (source.startswith("./"), mode) == (True, "ro")
    context = pod_spec(named(base, "StatefulSet", "relay-redis"))["securityContext"]
    assert redis["user"] == f"{context['runAsUser']}:{context['runAsGroup']}"


def test_the_api_is_published_on_loopback_unless_told_otherwise(compose: dict[str, Any]) -> None:
    (published,) = compose["services"]["api"]["ports"]
    assert resolve(published) == f"127.0.0.1:{contract.PORT}:{contract.PORT}"
    assert resolve(published, {"RELAY_API_PUBLISH": "0.0.0.0:9000"}) == f"0.0.0.0:9000:{contract.PORT}"


def test_stop_budgets_cover_graceful_shutdown(compose: dict[str, Any]) -> None:
    from shared.settings import Settings

    services = compose["services"]
    worker_env, api_env = services["worker"]["environment"], services["api"]["environment"]
    grace = float(worker_env.get("RELAY_WORKER_GRACE_SECONDS", Settings.model_fields["worker_grace_seconds"].default))
    drain = float(api_env.get("RELAY_API_DRAIN_SECONDS", Settings.model_fields["api_drain_seconds"].default))
    # After the grace, arq cancels and re-queues unfinished jobs and closes its pool: give that time too.
    assert seconds(services["worker"]["stop_grace_period"]) >= grace + 10
    assert seconds(services["api"]["stop_grace_period"]) > drain + 5
