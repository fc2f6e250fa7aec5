"""The overlay cluster-redis: Relay on cluster-mode managed Redis (rendered by kubectl's kustomize, offline)."""

from __future__ import annotations

import copy
from typing import Any

from shared.settings import Settings
from tests.deploy import tools
from tests.deploy.manifests import Doc, configmap_data, container, of_kind, relay_deployments

OVERLAY = "cluster-redis"
URL_KEY = "RELAY_REDIS_URL"
SECRET = "relay-secrets"
# What a managed cluster's URL looks like: TLS, an access key as the password, the service's endpoint.
EXAMPLE_URL = "rediss://:0123456789abcdef0123@relay.westeurope.redis.azure.net:10000/0"


def without_config_names(docs: list[Doc]) -> list[Doc]:
    """The rendered objects with the generated relay-config (name and data) taken out of the comparison."""
    stripped = []
    for doc in copy.deepcopy(docs):
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("relay-config-"):
            continue
        for workload in relay_deployments([doc]):
            for source in container(workload).get("envFrom", []):
                if source.get("configMapRef", {}).get("name", "").startswith("relay-config-"):
                    source["configMapRef"]["name"] = "relay-config"
        stripped.append(doc)
    return stripped


def test_the_overlay_renders(rendered: dict[str, list[Doc]]) -> None:
    assert OVERLAY in tools.kustomizations()
    assert {d["metadata"]["name"] for d in relay_deployments(rendered[OVERLAY])} >= {"relay-api", "relay-worker"}


def test_it_is_external_redis_plus_cluster_mode(rendered: dict[str, list[Doc]]) -> None:
    """No in-cluster Redis (what external-redis removes), and nothing else changed but the settings."""
    assert without_config_names(rendered[OVERLAY]) == without_config_names(rendered["external-redis"])
    external = configmap_data(rendered["external-redis"], "relay-config")
    assert configmap_data(rendered[OVERLAY], "relay-config") == {**external, "RELAY_REDIS_CLUSTER": "true"}
    assert not of_kind(rendered[OVERLAY], "StatefulSet")
    assert not of_kind(rendered[OVERLAY], "Secret"), "the Secret is created out of band"


def test_api_and_workers_run_in_cluster_mode_with_the_url_from_the_secret(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[OVERLAY]
    (config,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("relay-config-")]
    for workload in relay_deployments(docs):
        name, c = workload["metadata"]["name"], container(workload)
        sources = c["envFrom"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in sources, f"{name} misses the settings"
        assert sources[-1] == {"secretRef": {"name": SECRET}}, f"{name}: the Secret must win over the ConfigMap"
        env = {e["name"]: e for e in c.get("env", [])}
        assert env[URL_KEY] == {"name": URL_KEY, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": URL_KEY}}}
        assert "RELAY_REDIS_CLUSTER" not in env, f"{name}: a literal would override the ConfigMap"


def test_the_settings_it_renders_accept_a_managed_clusters_url(rendered: dict[str, list[Doc]]) -> None:
    data: dict[str, Any] = configmap_data(rendered[OVERLAY], "relay-config")
    values = {k.removeprefix("RELAY_").lower(): v for k, v in data.items() if k.startswith("RELAY_")}
    settings = Settings.model_validate({**values, "redis_url": EXAMPLE_URL})
    assert settings.redis_cluster is True
    assert settings.redis_url.startswith("rediss://")
