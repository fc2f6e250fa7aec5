"""Every kustomization renders offline and every object validates against the Kubernetes schemas."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy import keda, tools
from tests.deploy.manifests import Doc, named, of_kind

# Kinds that are CRDs, not core Kubernetes: kubernetes-validate has no schema for them, so they are checked
# by tests/deploy/keda.py instead. Anything else without a schema is a failure, not a skip.
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}

TREES = list(tools.kustomizations())


def validate(doc: Doc) -> None:
    """Strict validation (unknown fields rejected) against the bundled Kubernetes schemas."""
    kubernetes_validate.validate(doc, tools.KUBERNETES_VERSION, strict=True)


def test_there_is_a_base_and_an_external_redis_overlay() -> None:
    assert TREES[0] == "base"
    assert "external-redis" in TREES


@pytest.mark.parametrize("tree", TREES)
def test_every_object_validates(tree: str, rendered: dict[str, list[Doc]]) -> None:
    skipped: set[tuple[str, str]] = set()
    for doc in rendered[tree]:
        kind = (doc["apiVersion"], doc["kind"])
        if kind in CRD_KINDS:
            skipped.add(kind)
            continue
        try:
            validate(doc)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{tree}: {doc['kind']}/{doc['metadata']['name']} at {list(exc.path)}: {exc.message}")
    assert skipped == CRD_KINDS, "the CRD kinds skipped here are the ones keda.py validates"


@pytest.mark.parametrize("tree", TREES)
def test_scaled_objects_are_structurally_valid(tree: str, rendered: dict[str, list[Doc]]) -> None:
    scaled = of_kind(rendered[tree], "ScaledObject")
    assert scaled, "workers must be autoscaled on queue depth"
    for doc in scaled:
        keda.validate_scaled_object(doc)
        for trigger in doc["spec"]["triggers"]:
            if trigger["type"] == "metrics-api":
                assert set(trigger["metadata"]) >= keda.METRICS_API_REQUIRED


def test_validators_reject_broken_objects(base: list[Doc]) -> None:
    """Proves both validators have teeth."""
    deployment = copy.deepcopy(named(base, "Deployment", "relay-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(named(base, "ScaledObject", "relay-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["targetValue"] = 20
    with pytest.raises(jsonschema.ValidationError):
        keda.validate_scaled_object(scaled)
    scaled = copy.deepcopy(named(base, "ScaledObject", "relay-worker"))
    scaled["spec"]["minReplicas"] = 2
    with pytest.raises(jsonschema.ValidationError):
        keda.validate_scaled_object(scaled)


def test_every_rendered_object_lands_in_one_namespace(rendered: dict[str, list[Doc]]) -> None:
    for tree, docs in rendered.items():
        namespaces = {d["metadata"]["name"] for d in of_kind(docs, "Namespace")}
        assert len(namespaces) == 1, tree
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") in namespaces, f"{tree}: {doc['kind']} {doc['metadata']}"


def test_secret_example_is_valid_but_never_rendered(rendered: dict[str, list[Doc]]) -> None:
    example = yaml.safe_load((tools.K8S / "base" / "secret.example.yaml").read_text())
    validate(example)
    assert all("REPLACE_ME" in v for v in example["stringData"].values()), "placeholders only"
    for tree, docs in rendered.items():
        assert not of_kind(docs, "Secret"), f"{tree} must not ship a Secret; it is created out of band"


def test_external_redis_overlay_swaps_redis_out(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["external-redis"]
    assert not of_kind(docs, "StatefulSet")
    assert not [d for d in of_kind(docs, "Service") if "redis" in d["metadata"]["name"]]
    assert not of_kind(docs, "NetworkPolicy"), "a policy guarding a deleted Redis would select nothing"
    assert [d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")] == [
        d["metadata"]["name"] for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("relay-config-")
    ], "the in-cluster Redis's start script goes with it"
