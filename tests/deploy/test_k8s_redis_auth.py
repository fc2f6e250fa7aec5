"""Kubernetes: Redis requires the password, and everyone takes it from one key of the relay-secrets Secret."""

from __future__ import annotations

import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from tests.deploy import tools
from tests.deploy.manifests import Doc, configmap_data, container, named, of_kind, pod_spec, relay_deployments

SCRIPT = tools.K8S / "base" / "redis.sh"
URL_KEY = "RELAY_REDIS_URL"
SECRET = "relay-secrets"
TREES = list(tools.kustomizations())


def secret_example() -> dict[str, str]:
    data: dict[str, str] = yaml.safe_load((tools.K8S / "base" / "secret.example.yaml").read_text())["stringData"]
    return data


@pytest.mark.parametrize("tree", TREES)
def test_the_redis_url_comes_from_the_secret_and_is_required(rendered: dict[str, list[Doc]], tree: str) -> None:
    docs = rendered[tree]
    readers = relay_deployments(docs) + of_kind(docs, "StatefulSet")  # the API, every worker pool, and Redis
    assert {"relay-api", "relay-worker"} <= {r["metadata"]["name"] for r in readers}
    for reader in readers:
        env = {e["name"]: e for e in container(reader).get("env", [])}
        reference = {"name": URL_KEY, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": URL_KEY}}}
        assert env[URL_KEY] == reference, reader["metadata"]["name"]


@pytest.mark.parametrize("tree", list(tools.kustomizations()))
def test_no_configmap_carries_the_redis_url(rendered: dict[str, list[Doc]], tree: str) -> None:
    """A URL there would be a password in plain sight, or dead config the Secret's key overrides."""
    assert URL_KEY not in configmap_data(rendered[tree], "relay-config")


def test_redis_runs_the_script_compose_runs(base: list[Doc]) -> None:
    redis = named(base, "StatefulSet", "relay-redis")
    (generated,) = [c for c in of_kind(base, "ConfigMap") if c["metadata"]["name"].startswith("relay-redis-script-")]
    assert generated["data"] == {"redis.sh": SCRIPT.read_text()}
    volumes = {v["name"]: v for v in pod_spec(redis)["volumes"]}
    (mount,) = [m for m in container(redis)["volumeMounts"] if volumes.get(m["name"], {}).get("configMap")]
    assert volumes[mount["name"]]["configMap"]["name"] == generated["metadata"]["name"]
    assert mount["readOnly"] is True
    path = f"{mount['mountPath']}/redis.sh"
    assert container(redis)["command"][:3] == ["sh", path, "serve"]
    assert container(redis)["readinessProbe"]["exec"]["command"] == ["sh", path, "check", "PONG"]
    assert container(redis)["livenessProbe"]["exec"]["command"] == ["sh", path, "check", "PONG", "LOADING"]


def test_the_example_url_has_the_shape_relay_needs_and_a_placeholder_redis_refuses(base: list[Doc]) -> None:
    url = urlparse(secret_example()[URL_KEY])
    service = named(base, "Service", "relay-redis")
    assert (url.scheme, url.username, url.hostname) == ("redis", "relay", service["metadata"]["name"])
    assert url.port == service["spec"]["ports"][0]["port"]
    result = subprocess.run(
        ["sh", str(SCRIPT), "serve"], env={"RELAY_REDIS_URL": url.geturl()}, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 64, "an applied example must not start Redis with a published password"
