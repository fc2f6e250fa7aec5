"""Lookups over parsed deploy documents: Kubernetes objects, pod specs, containers, env; compose durations."""

from __future__ import annotations

import re
from typing import Any

Doc = dict[str, Any]

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    """All documents of one kind."""
    return [d for d in docs if d.get("kind") == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one document with this kind and name (fails with the names that do exist)."""
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, have {[d['metadata']['name'] for d in of_kind(docs, kind)]}"
    return found[0]


def workloads(docs: list[Doc]) -> list[Doc]:
    """Everything that runs pods."""
    return [d for d in docs if d.get("kind") in WORKLOAD_KINDS]


def relay_deployments(docs: list[Doc]) -> list[Doc]:
    """Relay's own Deployments: the API and every worker pool (not Redis)."""
    return [d for d in of_kind(docs, "Deployment") if pod_labels(d).get("app.kubernetes.io/name") == "relay"]


def worker_pools(docs: list[Doc], command: list[str]) -> list[Doc]:
    """The Deployments that run ``command`` (the worker's): the base's one, or one per pool of named queues."""
    return [d for d in relay_deployments(docs) if container(d)["command"] == command]


def pod_spec(workload: Doc) -> Doc:
    """The pod template's spec."""
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Doc) -> dict[str, str]:
    """The labels every pod of this workload carries."""
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def container(workload: Doc, name: str | None = None) -> Doc:
    """A container by name, or the only container."""
    containers: list[Doc] = pod_spec(workload)["containers"]
    if name is None:
        assert len(containers) == 1, f"{workload['metadata']['name']} has {len(containers)} containers"
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def container_port(c: Doc, port: int | str) -> int:
    """A numeric port, or a named one resolved against the container's ports."""
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    assert port in by_name, f"container {c['name']} has no port named {port!r}"
    return int(by_name[port])


def selector_matches(selector: Doc, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND every matchExpression)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def configmap_data(docs: list[Doc], name_prefix: str) -> dict[str, str]:
    """Data of the ConfigMap generated from ``name_prefix`` (kustomize appends a content hash)."""
    found = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith(name_prefix + "-")]
    assert len(found) == 1, f"expected one generated ConfigMap {name_prefix}-<hash>, found {len(found)}"
    data: dict[str, str] = found[0].get("data", {})
    return data


def literal_env(c: Doc) -> dict[str, str]:
    """``env`` entries with a literal value (valueFrom entries are references, not settings)."""
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def seconds(duration: str) -> float:
    """A Compose duration such as ``40s``, ``1m30s`` or ``500ms``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * scale[u] for n, u in parts)


def resolve(value: str, env: dict[str, str] | None = None) -> str:
    """What Compose makes of ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` given ``env``."""
    env = env or {}

    def substitute(match: re.Match[str]) -> str:
        name, colon, default = match.group(1), match.group(2), match.group(3) or ""
        if name in env and (env[name] or not colon):
            return env[name]
        return default

    assert not re.search(r"\$\{[^}]*\?", value), f"required-variable interpolation: {value!r}"
    return re.sub(r"\$\{(\w+)(?:(:?)-([^}]*))?\}", substitute, value).replace("$$", "$")
