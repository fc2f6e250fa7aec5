"""Rolling deploys and node drains lose no work: probes, stop budgets, disruption budgets, autoscaling."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from tests.deploy import contract
from tests.deploy.manifests import (
    Doc,
    configmap_data,
    container,
    container_port,
    named,
    pod_labels,
    pod_spec,
    selector_matches,
    workloads,
)

# What arq needs after the grace period: cancel the unfinished jobs, re-queue them, close its pool.
WORKER_CLOSE_MARGIN = 10


def setting(docs: list[Doc], field: str) -> float:
    """A Settings value as the pods see it: the ConfigMap's, else the Settings default."""
    value = configmap_data(docs, "relay-config").get(f"RELAY_{field.upper()}")
    return float(value if value is not None else Settings.model_fields[field].default)


def prestop_sleep(c: Doc) -> int:
    """Seconds of the container's ``preStop: exec: [sleep, N]``."""
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", "the preStop hook must be a plain sleep (endpoint propagation delay)"
    return int(command[1])


def test_api_rollout_never_drops_below_desired(base: list[Doc]) -> None:
    strategy = named(base, "Deployment", "relay-api")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_worker_rollout_starts_replacements_first(base: list[Doc]) -> None:
    assert named(base, "Deployment", "relay-worker")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_api_probes_hit_health_routes_on_the_serving_port(base: list[Doc]) -> None:
    api = container(named(base, "Deployment", "relay-api"))
    ready, live = api["readinessProbe"]["httpGet"], api["livenessProbe"]["httpGet"]
    assert ready["path"] == contract.READY_PATH
    assert live["path"] == contract.LIVE_PATH
    assert container_port(api, ready["port"]) == container_port(api, live["port"]) == contract.PORT


def test_api_waits_for_endpoint_removal_then_drains_within_its_grace(base: list[Doc]) -> None:
    deployment = named(base, "Deployment", "relay-api")
    sleep = prestop_sleep(container(deployment))
    assert sleep >= 3, "endpoint removal takes a few seconds to reach every kube-proxy"
    drain = setting(base, "api_drain_seconds")
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > sleep + drain + 5


def test_worker_grace_outlasts_the_job_completion_wait(base: list[Doc]) -> None:
    deployment = named(base, "Deployment", "relay-worker")
    grace = setting(base, "worker_grace_seconds")
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= grace + WORKER_CLOSE_MARGIN
    assert "lifecycle" not in container(deployment), "a preStop hook would eat into the job grace period"


def test_worker_liveness_is_arq_check(base: list[Doc]) -> None:
    worker = container(named(base, "Deployment", "relay-worker"))
    assert worker["command"] == contract.WORKER_COMMAND
    probe = worker["livenessProbe"]
    assert probe["exec"]["command"] == contract.WORKER_CHECK
    # A Redis blip must not restart every worker at once: tolerate well over one health-key refresh.
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 30


@pytest.mark.parametrize("name", ["relay-api", "relay-worker"])
def test_disruption_budgets_cover_the_pods(base: list[Doc], name: str) -> None:
    budget = named(base, "PodDisruptionBudget", name)["spec"]
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable", 0) >= 1
    labels = pod_labels(named(base, "Deployment", name))
    assert selector_matches(budget["selector"], labels)
    for other in workloads(base):
        if other["metadata"]["name"] != name:
            assert not selector_matches(budget["selector"], pod_labels(other)), other["metadata"]["name"]


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(base: list[Doc]) -> None:
    for name in ("relay-api", "relay-worker"):
        assert "replicas" not in named(base, "Deployment", name)["spec"], f"{name}: apply would reset the scale"


def test_api_scales_on_cpu(base: list[Doc]) -> None:
    hpa = named(base, "HorizontalPodAutoscaler", "relay-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "relay-api"}
    assert hpa["minReplicas"] >= 2, "one API pod cannot be rolled or drained without an outage"
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    api = container(named(base, "Deployment", "relay-api"))
    assert "cpu" in api["resources"]["requests"], "CPU utilisation is measured against the request"


@pytest.mark.parametrize("tree", ["base", "external-redis"])
def test_workers_scale_on_the_api_queue_depth_gauge(rendered: dict[str, list[Doc]], tree: str) -> None:
    docs = rendered[tree]
    scaled = named(docs, "ScaledObject", "relay-worker")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "relay-worker"
    assert spec["minReplicaCount"] >= 2
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "metrics-api"
    assert meta["format"] == "prometheus"
    assert meta["valueLocation"] == contract.QUEUE_DEPTH_GAUGE
    # One worker per RELAY_WORKER_CONCURRENCY due-or-running tasks: a busy worker is never scaled away.
    assert float(meta["targetValue"]) == float(configmap_data(docs, "relay-config")["RELAY_WORKER_CONCURRENCY"])
    # KEDA runs in its own namespace: the URL must name the API Service in *this* render's namespace.
    namespace = scaled["metadata"]["namespace"]
    service = named(docs, "Service", "relay-api")
    port = service["spec"]["ports"][0]["port"]
    assert meta["url"] == f"http://relay-api.{namespace}.svc.cluster.local:{port}{contract.METRICS_PATH}"
