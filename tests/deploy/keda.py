"""A structural JSON schema for the one kind of KEDA object Relay ships, the workers' ScaledObject (one per pool
in k8s/overlays/queue-pools).

KEDA's CRDs are not part of the Kubernetes OpenAPI schemas that kubernetes-validate bundles, and no
offline package ships them as JSON schema. This is the subset of keda.sh/v1alpha1 ScaledObject that Relay
uses, transcribed from KEDA 2.16's CRD: unknown keys are rejected where the CRD is closed, and trigger
metadata must be strings (the CRD types it ``map[string]string``; a bare number there is refused).
"""

from __future__ import annotations

from typing import Any

import jsonschema

_INT = {"type": "integer", "minimum": 0}

SCALED_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                        },
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object", "required": ["name"]},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}

# What the metrics-api scaler needs to read a Prometheus text endpoint (KEDA >= 2.15 documents `format`).
METRICS_API_REQUIRED = frozenset({"url", "valueLocation", "targetValue"})


def validate_scaled_object(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if the ScaledObject is structurally wrong."""
    jsonschema.Draft202012Validator(SCALED_OBJECT).validate(doc)
