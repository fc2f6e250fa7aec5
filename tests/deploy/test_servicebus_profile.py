"""The compose profile `servicebus`: Microsoft's Service Bus emulator, its SQL backend and bridge workers.

Offline, like every deploy test: nothing here pulls an image or starts a container. What is checked is
what would otherwise only fail at `docker compose --profile servicebus up` (or, worse, at a plain `up`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from shared.settings import Settings
from tests.deploy import servicebus_emulator, tools
from tests.deploy.contract import WORKER_COMMAND
from tests.deploy.manifests import resolve, seconds

PROFILE = "servicebus"
EMULATOR_IMAGE = "mcr.microsoft.com/azure-messaging/servicebus-emulator:latest"
SQL_IMAGE = "mcr.microsoft.com/azure-sql-edge:latest"
EMULATOR_CONFIG = tools.REPO / "deploy" / "servicebus-emulator" / "config.json"
# The emulator's documented connection string uses this fixed placeholder key; it guards nothing.
EMULATOR_KEY = "SAS_KEY_VALUE"
REPLY_QUEUE = "relay-replies"
EMULATOR_PORTS = {5672, 5300}  # AMQP; HTTP (GET /health, management)
# What arq needs after the grace period (and, here, after the bridge's stop): re-queue, close its pool.
WORKER_CLOSE_MARGIN = 10

Service = dict[str, Any]


def env_of(service: Service) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def profiled(compose: dict[str, Any]) -> dict[str, Service]:
    """The services of this profile (the profile `cluster` has its own: tests/deploy/test_cluster_profile.py)."""
    return {name: s for name, s in compose["services"].items() if PROFILE in s.get("profiles", [])}


def emulator(compose: dict[str, Any]) -> tuple[str, Service]:
    (found,) = [(n, s) for n, s in compose["services"].items() if s.get("image") == EMULATOR_IMAGE]
    return found


def sql_backend(compose: dict[str, Any]) -> tuple[str, Service]:
    name = env_of(emulator(compose)[1])["SQL_SERVER"]
    assert name in compose["services"], f"the emulator's SQL_SERVER={name} is not a service"
    return name, compose["services"][name]


def bridge_workers(compose: dict[str, Any]) -> dict[str, Service]:
    """Services that would run the bridge: their environment enables it."""
    return {
        name: s
        for name, s in compose["services"].items()
        if Settings.model_validate(relay_values(s)).servicebus_enabled
    }


def relay_values(service: Service) -> dict[str, str]:
    """The service's RELAY_* variables as Settings field values (interpolated with an empty environment)."""
    return {k.removeprefix("RELAY_").lower(): resolve(v) for k, v in env_of(service).items() if k.startswith("RELAY_")}


def connection_string_parts(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split(";") if part)


@pytest.fixture(scope="module")
def emulator_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(EMULATOR_CONFIG.read_text())
    return config


# --- the profile is opt-in, and a plain `docker compose up` cannot reach into it -------------------------


def test_the_profile_holds_exactly_the_service_bus_services(compose: dict[str, Any]) -> None:
    expected = {emulator(compose)[0], sql_backend(compose)[0], *bridge_workers(compose)}
    assert set(profiled(compose)) == expected
    for name, service in profiled(compose).items():
        assert service["profiles"] == [PROFILE], name
    assert bridge_workers(compose), "the profile runs no worker with the bridge enabled"


def test_a_plain_up_starts_nothing_from_the_profile(compose: dict[str, Any]) -> None:
    """`docker compose up` starts the services without profiles and what they depend on; none may need a
    profiled one (Compose would refuse, or the profile would leak into every `up`)."""
    default = {name for name, s in compose["services"].items() if not s.get("profiles")}
    assert default == {"redis", "api", "worker"}
    for name in default:
        needs = set(compose["services"][name].get("depends_on", {}))
        assert needs <= default, f"{name} depends on profiled services {needs - default}"
    for name, service in profiled(compose).items():
        for target in service.get("depends_on", {}):
            assert target in default or compose["services"][target].get("profiles") == [PROFILE], (name, target)


def strings(node: Any) -> list[str]:
    """Every string value (and key) in a parsed YAML tree: what Compose interpolates; comments are not."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings(k), *strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def test_no_variable_is_required_by_interpolation(compose: dict[str, Any]) -> None:
    """Compose interpolates the whole file before it applies profiles, so a `${VAR:?}` in a profiled
    service would make every plain `docker compose up` (and `down`, `ps`...) fail when VAR is unset."""
    required = [s for s in strings(compose) if re.search(r"\$\{[^}]*\?", s)]
    assert not required, f"required-variable interpolation breaks a plain `docker compose up`: {required}"


# --- no secret in the repository -------------------------------------------------------------------------


def test_the_sa_password_comes_only_from_the_environment(compose: dict[str, Any]) -> None:
    for name in (emulator(compose)[0], sql_backend(compose)[0]):
        password = env_of(compose["services"][name])["MSSQL_SA_PASSWORD"]
        assert re.fullmatch(r"\$\{MSSQL_SA_PASSWORD(:?-)?\}", password), f"{name}: {password!r} is not only ${{}}"
        assert resolve(password) == "", f"{name}: a default password would be a committed secret"
        assert resolve(password, {"MSSQL_SA_PASSWORD": "Xy9!example"}) == "Xy9!example"
    for service in compose["services"].values():
        for key, value in env_of(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert re.fullmatch(r"\$\{\w+(:?-)?\}", value), f"{key} must come from the environment"


def test_the_only_shared_access_key_is_the_emulators_placeholder(compose: dict[str, Any]) -> None:
    """A connection string with a real key must never be committed; the emulator's fixed one may."""
    committed = [EMULATOR_CONFIG, tools.REPO / "docker-compose.yml"]
    for path in committed:
        for key in re.findall(r"SharedAccessKey=([^;\"'\s]*)", path.read_text()):
            assert key == EMULATOR_KEY, f"{path.name} holds a SharedAccessKey that is not the emulator's: {key!r}"
    for name, worker in bridge_workers(compose).items():
        parts = connection_string_parts(env_of(worker)["RELAY_SERVICEBUS_CONNECTION_STRING"])
        assert parts["SharedAccessKey"] == EMULATOR_KEY, name
        assert parts["UseDevelopmentEmulator"] == "true", f"{name}: only the emulator may get a literal key"


def test_the_emulator_config_holds_no_credentials() -> None:
    text = EMULATOR_CONFIG.read_text().lower()
    for word in ("password", "secret", "sharedaccesskey", "connectionstring"):
        assert word not in text, word


# --- the emulator and its SQL backend --------------------------------------------------------------------


def test_the_emulator_runs_on_its_sql_backend(compose: dict[str, Any]) -> None:
    (emulator_name, emulator_service), (sql_name, sql) = emulator(compose), sql_backend(compose)
    assert resolve(sql["image"]) == SQL_IMAGE
    assert env_of(emulator_service)["ACCEPT_EULA"] == env_of(sql)["ACCEPT_EULA"] == "Y"
    assert env_of(emulator_service)["MSSQL_SA_PASSWORD"] == env_of(sql)["MSSQL_SA_PASSWORD"]
    assert emulator_service["depends_on"] == {sql_name: {"condition": "service_healthy"}}
    # The emulator image has no shell, curl or wget: it cannot probe its own /health, and says so.
    assert emulator_service["healthcheck"] == {"disable": True}, emulator_name


def test_the_sql_healthcheck_uses_what_the_image_has(compose: dict[str, Any]) -> None:
    """sqlcmd is absent from SQL Edge's arm64 image; bash (with /dev/tcp) is in every SQL image."""
    test = sql_backend(compose)[1]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    assert "sqlcmd" not in " ".join(test)
    assert re.fullmatch(r"exec 3<>/dev/tcp/127\.0\.0\.1/1433", test[3])


def test_the_emulator_gets_its_config_read_only(compose: dict[str, Any]) -> None:
    volumes = emulator(compose)[1]["volumes"]
    (mount,) = [v for v in volumes if v.split(":")[1] == servicebus_emulator.CONFIG_MOUNT]
    source, _, mode = mount.split(":")
    assert mode == "ro", "the emulator has no business writing its config"
    assert (tools.REPO / source).resolve() == EMULATOR_CONFIG.resolve()
    assert source.startswith("./"), "a bare name would be a named volume, not the file"


def test_the_emulator_is_published_on_loopback_only(compose: dict[str, Any]) -> None:
    ports = [resolve(p) for p in emulator(compose)[1].get("ports", [])]
    assert ports, "clients on the host need the emulator's AMQP port"
    container_ports = set()
    for port in ports:
        host_ip, host_port, container_port = port.split(":")
        assert host_ip == "127.0.0.1", f"{port}: the emulator's fixed key must not be reachable off this machine"
        assert host_port == container_port, f"{port}: the documented ports are the defaults"
        container_ports.add(int(container_port))
    assert container_ports == EMULATOR_PORTS


# --- its Config.json --------------------------------------------------------------------------------------


def test_the_emulator_config_is_valid(emulator_config: dict[str, Any]) -> None:
    servicebus_emulator.validate(emulator_config)


def test_the_emulator_declares_the_queues_the_bridge_uses(
    compose: dict[str, Any], emulator_config: dict[str, Any]
) -> None:
    declared = servicebus_emulator.queues(emulator_config)
    for name, worker in bridge_workers(compose).items():
        settings = Settings.model_validate(relay_values(worker))
        assert settings.servicebus_queue in declared, f"{name} reads a queue the emulator does not declare"
        assert not settings.servicebus_topic, "the config declares no topics"
    assert REPLY_QUEUE in declared, "request/reply needs a queue for the replies"
    for name, properties in declared.items():
        # Sessions would make the bridge's plain receiver fail; replies set session_id only on request.
        assert properties.get("RequiresSession", False) is False, name


def test_the_task_queue_behaves_like_the_test_suites_endpoint(
    compose: dict[str, Any], emulator_config: dict[str, Any]
) -> None:
    """Same redelivery as `python -m bench.harness.servicebus` (10 deliveries, 60 s locks), so what the
    bridge tests prove holds against the emulator too."""
    declared = servicebus_emulator.queues(emulator_config)
    for worker in bridge_workers(compose).values():
        settings = Settings.model_validate(relay_values(worker))
        queue = declared[settings.servicebus_queue]
        assert queue["MaxDeliveryCount"] == 10
        lock = servicebus_emulator.duration_seconds(queue["LockDuration"])
        assert lock == 60
        # AutoLockRenewer renews well before expiry, for at most the configured renewal time.
        assert settings.servicebus_lock_renewal_seconds > lock


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("Namespaces", 0, "Name"), "relay"),
        (("Namespaces", 0, "Queues", 0, "Properties", "MaxDeliveryCount"), 11),
        (("Namespaces", 0, "Queues", 0, "Properties", "LockDuration"), "PT10M"),
        (("Namespaces", 0, "Queues", 0, "Properties", "LockDuration"), "60s"),
        (("Namespaces", 0, "Queues", 0, "Properties", "DefaultMessageTimeToLive"), "P1D"),
        (("Namespaces", 0, "Queues", 0, "Properties", "ForwardTo"), "no-such-queue"),
        (("Namespaces", 0, "Queues", 0, "Properties", "MaxDeliveryCnt"), 5),
        (("Namespaces", 0, "Queues", 0, "Name"), "-bad"),
        (("Logging", "Type"), "Syslog"),
    ],
)
def test_the_config_check_has_teeth(emulator_config: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    broken = json.loads(json.dumps(emulator_config))
    node = broken["UserConfig"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises((AssertionError, jsonschema.ValidationError)):
        servicebus_emulator.validate(broken)


# --- the bridge workers -----------------------------------------------------------------------------------


def test_bridge_workers_set_only_settings_fields(compose: dict[str, Any]) -> None:
    for name, worker in bridge_workers(compose).items():
        relay = [k for k in env_of(worker) if k.startswith("RELAY_")]
        unknown = {k for k in relay if k.removeprefix("RELAY_").lower() not in Settings.model_fields}
        assert not unknown, f"{name} sets variables Settings ignores: {unknown}"
        Settings.model_validate(relay_values(worker))


def test_bridge_workers_reach_the_emulator(compose: dict[str, Any]) -> None:
    from azure.servicebus import ServiceBusClient

    emulator_name = emulator(compose)[0]
    for name, worker in bridge_workers(compose).items():
        value = env_of(worker)["RELAY_SERVICEBUS_CONNECTION_STRING"]
        parts = connection_string_parts(value)
        assert parts["Endpoint"] == f"sb://{emulator_name}", f"{name}: the emulator's service name is its host"
        assert parts["SharedAccessKeyName"] == "RootManageSharedAccessKey"
        client = ServiceBusClient.from_connection_string(value)  # parses; connects only when used
        try:
            assert client.fully_qualified_namespace == emulator_name
        finally:
            client.close()


def test_bridge_workers_are_workers_like_the_others(compose: dict[str, Any]) -> None:
    plain = compose["services"]["worker"]
    emulator_name = emulator(compose)[0]
    for name, worker in bridge_workers(compose).items():
        assert worker["command"] == plain["command"] == WORKER_COMMAND, name
        for key in ("image", "build", "healthcheck", "read_only", "tmpfs", "cap_drop", "security_opt", "restart"):
            assert worker[key] == plain[key], f"{name}.{key} differs from the workers'"
        assert env_of(plain).items() <= env_of(worker).items(), f"{name} must get every setting the workers get"
        assert worker["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            # The emulator cannot report health; the bridge reconnects every 5 s until it answers.
            emulator_name: {"condition": "service_started"},
        }


def test_bridge_workers_stop_budget_covers_the_bridge(compose: dict[str, Any]) -> None:
    """arq runs on_shutdown (the bridge's stop) only after the job grace period has run out."""
    from worker.bridge.service import STOP_SECONDS

    for name, worker in bridge_workers(compose).items():
        settings = Settings.model_validate(relay_values(worker))
        budget = settings.worker_grace_seconds + STOP_SECONDS + WORKER_CLOSE_MARGIN
        assert seconds(worker["stop_grace_period"]) >= budget, name
