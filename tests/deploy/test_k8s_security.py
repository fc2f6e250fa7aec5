"""Every pod meets the "restricted" Pod Security Standard, has bounded resources, and Redis is fenced in: in
the base and in every overlay (whose worker pools are Relay pods like the base's)."""

from __future__ import annotations

import pytest

from tests.deploy import tools
from tests.deploy.manifests import (
    Doc,
    container,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    relay_deployments,
    selector_matches,
    workloads,
)

TREES = list(tools.kustomizations())


def all_containers(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    """(workload, container) pairs, init containers included."""
    return [(w, c) for w in workloads(docs) for c in pod_spec(w).get("initContainers", []) + pod_spec(w)["containers"]]


def test_namespace_enforces_restricted(base: list[Doc]) -> None:
    (namespace,) = of_kind(base, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("tree", TREES)
def test_pods_run_as_non_root_with_runtime_default_seccomp(rendered: dict[str, list[Doc]], tree: str) -> None:
    for workload in workloads(rendered[tree]):
        context = pod_spec(workload)["securityContext"]
        assert context["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert context.get("runAsUser", 1) != 0, workload["metadata"]["name"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault", workload["metadata"]["name"]


@pytest.mark.parametrize("tree", TREES)
def test_containers_are_locked_down(rendered: dict[str, list[Doc]], tree: str) -> None:
    for workload, c in all_containers(rendered[tree]):
        where = f"{workload['metadata']['name']}/{c['name']}"
        context = c["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert not context["capabilities"].get("add"), where


@pytest.mark.parametrize("tree", TREES)
def test_containers_have_requests_and_memory_limits(rendered: dict[str, list[Doc]], tree: str) -> None:
    for _workload, c in all_containers(rendered[tree]):
        resources = c["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), c["name"]
        assert "memory" in resources["limits"], f"{c['name']}: an unbounded pod can starve its node"


def relay_pods(docs: list[Doc]) -> list[Doc]:
    """The API and every worker pool."""
    found = relay_deployments(docs)
    assert {"relay-api", "relay-worker"} <= {d["metadata"]["name"] for d in found}
    return found


@pytest.mark.parametrize("tree", TREES)
def test_relay_pods_get_a_writable_tmp(rendered: dict[str, list[Doc]], tree: str) -> None:
    for workload in relay_pods(rendered[tree]):
        mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert "/tmp" in mounts, (
            f"{workload['metadata']['name']}: HOME=/tmp in the image; the root filesystem is read-only"
        )
        assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("tree", TREES)
def test_relay_pods_get_no_service_links_or_token(rendered: dict[str, list[Doc]], tree: str) -> None:
    for workload in relay_pods(rendered[tree]):
        spec = pod_spec(workload)
        # A Service named relay-* would inject RELAY_*_PORT variables into a process that reads RELAY_*.
        assert spec["enableServiceLinks"] is False, workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, "Relay never talks to the Kubernetes API"


@pytest.mark.parametrize("tree", [t for t in TREES if t not in ("external-redis", "cluster-redis")])  # Redis elsewhere
def test_only_api_and_workers_reach_redis_on_6379(rendered: dict[str, list[Doc]], tree: str) -> None:
    docs = rendered[tree]
    (policy,) = of_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    guarded = {w["metadata"]["name"] for w in workloads(docs) if selector_matches(spec["podSelector"], pod_labels(w))}
    assert guarded == {"relay-redis"}
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}, "no namespaceSelector/ipBlock: only pods of this namespace"
    allowed = {
        w["metadata"]["name"]
        for w in workloads(docs)
        if any(selector_matches(peer["podSelector"], pod_labels(w)) for peer in rule["from"])
    }
    assert allowed == {d["metadata"]["name"] for d in relay_pods(docs)}  # the API and every worker pool


def test_redis_persists_with_aof_and_never_evicts(base: list[Doc]) -> None:
    redis = named(base, "StatefulSet", "relay-redis")
    command = container(redis)["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    claims = {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}
    data_mount = next(m for m in container(redis)["volumeMounts"] if m["mountPath"] == "/data")
    assert data_mount["name"] in claims, "AOF must live on a persistent volume"
