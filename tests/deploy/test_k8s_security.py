"""Every pod meets the "restricted" Pod Security Standard, has bounded resources, and Redis is fenced in."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import (
    Doc,
    container,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    selector_matches,
    workloads,
)

RELAY_WORKLOADS = ["relay-api", "relay-worker"]


def all_containers(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    """(workload, container) pairs, init containers included."""
    return [(w, c) for w in workloads(docs) for c in pod_spec(w).get("initContainers", []) + pod_spec(w)["containers"]]


def test_namespace_enforces_restricted(base: list[Doc]) -> None:
    (namespace,) = of_kind(base, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pods_run_as_non_root_with_runtime_default_seccomp(base: list[Doc]) -> None:
    for workload in workloads(base):
        context = pod_spec(workload)["securityContext"]
        assert context["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert context.get("runAsUser", 1) != 0, workload["metadata"]["name"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault", workload["metadata"]["name"]


def test_containers_are_locked_down(base: list[Doc]) -> None:
    for workload, c in all_containers(base):
        where = f"{workload['metadata']['name']}/{c['name']}"
        context = c["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert not context["capabilities"].get("add"), where


def test_containers_have_requests_and_memory_limits(base: list[Doc]) -> None:
    for _workload, c in all_containers(base):
        resources = c["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), c["name"]
        assert "memory" in resources["limits"], f"{c['name']}: an unbounded pod can starve its node"


@pytest.mark.parametrize("name", RELAY_WORKLOADS)
def test_relay_pods_get_a_writable_tmp(base: list[Doc], name: str) -> None:
    workload = named(base, "Deployment", name)
    mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    assert "/tmp" in mounts, "HOME=/tmp in the image; the root filesystem is read-only"
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("name", RELAY_WORKLOADS)
def test_relay_pods_get_no_service_links_or_token(base: list[Doc], name: str) -> None:
    spec = pod_spec(named(base, "Deployment", name))
    # A Service named relay-* would inject RELAY_*_PORT variables into a process that reads RELAY_*.
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False, "Relay never talks to the Kubernetes API"


def test_only_api_and_workers_reach_redis_on_6379(base: list[Doc]) -> None:
    (policy,) = of_kind(base, "NetworkPolicy")
    spec = policy["spec"]
    guarded = {w["metadata"]["name"] for w in workloads(base) if selector_matches(spec["podSelector"], pod_labels(w))}
    assert guarded == {"relay-redis"}
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}, "no namespaceSelector/ipBlock: only pods of this namespace"
    allowed = {
        w["metadata"]["name"]
        for w in workloads(base)
        if any(selector_matches(peer["podSelector"], pod_labels(w)) for peer in rule["from"])
    }
    assert allowed == {"relay-api", "relay-worker"}


def test_redis_persists_with_aof_and_never_evicts(base: list[Doc]) -> None:
    redis = named(base, "StatefulSet", "relay-redis")
    command = container(redis)["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    claims = {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}
    data_mount = next(m for m in container(redis)["volumeMounts"] if m["mountPath"] == "/data")
    assert data_mount["name"] in claims, "AOF must live on a persistent volume"
