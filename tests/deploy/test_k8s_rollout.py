"""Rolling deploys and node drains lose no work: probes, stop budgets, disruption budgets, autoscaling."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from tests.deploy import contract, tools
from tests.deploy.manifests import (
    Doc,
    configmap_data,
    container,
    container_port,
    literal_env,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    selector_matches,
    worker_pools,
    workloads,
)

TREES = list(tools.kustomizations())

# What arq needs after the grace period: cancel the unfinished jobs, re-queue them, close its pool.
WORKER_CLOSE_MARGIN = 10


def setting(docs: list[Doc], field: str, workload: Doc | None = None) -> float:
    """A Settings value as the pods see it (``workload``'s: its container's own env first), else the ConfigMap's,
    else the Settings default."""
    name = f"RELAY_{field.upper()}"
    value = literal_env(container(workload)).get(name) if workload is not None else None
    if value is None:
        value = configmap_data(docs, "relay-config").get(name)
    return float(value if value is not None else Settings.model_fields[field].default)


def pools(docs: list[Doc]) -> list[Doc]:
    """Every worker Deployment: the base's one, or one per pool of named queues (k8s/overlays/queue-pools)."""
    found = worker_pools(docs, contract.WORKER_COMMAND)
    assert "relay-worker" in [d["metadata"]["name"] for d in found]
    return found


def prestop_sleep(c: Doc) -> int:
    """Seconds of the container's ``preStop: exec: [sleep, N]``."""
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", "the preStop hook must be a plain sleep (endpoint propagation delay)"
    return int(command[1])


def test_api_rollout_never_drops_below_desired(base: list[Doc]) -> None:
    strategy = named(base, "Deployment", "relay-api")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("tree", TREES)
def test_worker_rollout_starts_replacements_first(rendered: dict[str, list[Doc]], tree: str) -> None:
    for pool in pools(rendered[tree]):
        assert pool["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, pool["metadata"]["name"]


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


@pytest.mark.parametrize("tree", TREES)
def test_worker_grace_outlasts_the_job_completion_wait(rendered: dict[str, list[Doc]], tree: str) -> None:
    for deployment in pools(rendered[tree]):
        grace = setting(rendered[tree], "worker_grace_seconds", deployment)
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= grace + WORKER_CLOSE_MARGIN
        assert "lifecycle" not in container(deployment), "a preStop hook would eat into the job grace period"


@pytest.mark.parametrize("tree", TREES)
def test_worker_liveness_is_arq_check(rendered: dict[str, list[Doc]], tree: str) -> None:
    for pool in pools(rendered[tree]):
        worker = container(pool)
        probe = worker["livenessProbe"]
        assert probe["exec"]["command"] == contract.WORKER_CHECK, pool["metadata"]["name"]
        # A Redis blip must not restart every worker at once: tolerate well over one health-key refresh.
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 30


@pytest.mark.parametrize("tree", TREES)
def test_disruption_budgets_cover_the_pods(rendered: dict[str, list[Doc]], tree: str) -> None:
    docs = rendered[tree]
    names = ["relay-api", *(pool["metadata"]["name"] for pool in pools(docs))]
    for name in names:  # the API and each worker pool: one budget each, selecting its pods and no others
        budget = named(docs, "PodDisruptionBudget", name)["spec"]
        assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable", 0) >= 1
        labels = pod_labels(named(docs, "Deployment", name))
        assert selector_matches(budget["selector"], labels)
        for other in workloads(docs):
            if other["metadata"]["name"] != name:
                assert not selector_matches(budget["selector"], pod_labels(other)), (name, other["metadata"]["name"])


@pytest.mark.parametrize("tree", TREES)
def test_worker_pools_select_only_their_own_pods(rendered: dict[str, list[Doc]], tree: str) -> None:
    docs = rendered[tree]
    for pool in pools(docs):
        selectors = [pool["spec"]["selector"]]
        selectors += [c["labelSelector"] for c in pod_spec(pool).get("topologySpreadConstraints", [])]
        for selector in selectors:
            assert selector_matches(selector, pod_labels(pool)), pool["metadata"]["name"]
            for other in workloads(docs):
                if other["metadata"]["name"] != pool["metadata"]["name"]:
                    assert not selector_matches(selector, pod_labels(other)), (pool["metadata"]["name"], other)


@pytest.mark.parametrize("tree", TREES)
def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(rendered: dict[str, list[Doc]], tree: str) -> None:
    for deployment in [named(rendered[tree], "Deployment", "relay-api"), *pools(rendered[tree])]:
        name = deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], f"{name}: apply would reset the scale"


def test_api_scales_on_cpu(base: list[Doc]) -> None:
    hpa = named(base, "HorizontalPodAutoscaler", "relay-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "relay-api"}
    assert hpa["minReplicas"] >= 2, "one API pod cannot be rolled or drained without an outage"
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    api = container(named(base, "Deployment", "relay-api"))
    assert "cpu" in api["resources"]["requests"], "CPU utilisation is measured against the request"


def value_locations(docs: list[Doc], pool: Doc) -> set[str]:
    """The gauges a pool's ScaledObject must read: the queue's one, or, for a pool of named queues, each
    queue's (one trigger per queue in its RELAY_QUEUES)."""
    queues = literal_env(container(pool)).get(contract.QUEUES_VARIABLE)
    queues = queues or configmap_data(docs, "relay-config").get(contract.QUEUES_VARIABLE)
    if queues is None:
        return {contract.QUEUE_DEPTH_GAUGE}
    return {contract.QUEUE_LABELLED_GAUGE.format(queue=q.strip()) for q in queues.split(",")}


@pytest.mark.parametrize("tree", TREES)
def test_each_worker_pool_scales_on_the_api_gauge_of_its_queues(rendered: dict[str, list[Doc]], tree: str) -> None:
    docs = rendered[tree]
    for pool in pools(docs):
        name = pool["metadata"]["name"]
        (scaled,) = [d for d in of_kind(docs, "ScaledObject") if d["spec"]["scaleTargetRef"]["name"] == name]
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        # Never 0: a queue with no work and no live worker has no series, which KEDA reports as an error.
        assert spec["minReplicaCount"] >= (2 if name == "relay-worker" else 1), name
        assert spec["maxReplicaCount"] > spec["minReplicaCount"]
        assert {t["metadata"]["valueLocation"] for t in spec["triggers"]} == value_locations(docs, pool), name
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "metrics-api"
            assert meta["format"] == "prometheus"
            # One worker per RELAY_WORKER_CONCURRENCY due-or-running tasks: a busy worker is never scaled away.
            assert float(meta["targetValue"]) == setting(docs, "worker_concurrency", pool), name
            # KEDA runs in its own namespace: the URL must name the API Service in *this* render's namespace.
            namespace = scaled["metadata"]["namespace"]
            service = named(docs, "Service", "relay-api")
            port = service["spec"]["ports"][0]["port"]
            assert meta["url"] == f"http://relay-api.{namespace}.svc.cluster.local:{port}{contract.METRICS_PATH}"
