"""k8s/overlays/queue-pools: a worker pool per named queue (issue #21), each scaled by KEDA on its own queue's
gauge. The rules every worker follows (security, rollout, budgets, metrics, the Secret) are checked for every
pool of every tree by the other deploy tests; these check what is particular to pools."""

from __future__ import annotations

import copy
import re

from prometheus_client import generate_latest

from api.metrics import ApiMetrics
from tests.deploy import contract
from tests.deploy.manifests import Doc, container, literal_env, named, of_kind, pod_spec, worker_pools

QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # what the API accepts as a queue's name
SELECTOR = re.compile(r'(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{queue="(?P<queue>[^"]+)"\}')

# What the gpu pool may change from the base's worker: who it is, what it serves, and where it runs.
GPU_ONLY_ENV = {contract.QUEUES_VARIABLE, "RELAY_WORKER_CONCURRENCY"}


def pool_queues(pool: Doc) -> list[str]:
    return [q.strip() for q in literal_env(container(pool))[contract.QUEUES_VARIABLE].split(",")]


def test_the_pools_serve_distinct_named_queues(rendered: dict[str, list[Doc]]) -> None:
    pools = worker_pools(rendered["queue-pools"], contract.WORKER_COMMAND)
    served = {pool["metadata"]["name"]: pool_queues(pool) for pool in pools}
    assert served == {"relay-worker": ["default"], "relay-worker-gpu": ["gpu"]}
    for queues in served.values():
        assert all(QUEUE_NAME.fullmatch(q) for q in queues), queues


def test_the_default_pool_is_the_base_worker_in_place(rendered: dict[str, list[Doc]]) -> None:
    # Same name and selectors as the base's: applying the overlay over a running base updates it in place
    # (a Deployment's selector cannot change).
    pools, base = rendered["queue-pools"], rendered["base"]
    for kind in ("Deployment", "PodDisruptionBudget"):
        assert (
            named(pools, kind, "relay-worker")["spec"]["selector"]
            == named(base, kind, "relay-worker")["spec"]["selector"]
        )
    assert pool_queues(named(pools, "Deployment", "relay-worker")) == ["default"]


def test_the_gpu_pool_is_the_base_worker_but_for_its_queue_labels_and_gpu(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["queue-pools"]
    base, gpu = (copy.deepcopy(named(docs, "Deployment", n)) for n in ("relay-worker", "relay-worker-gpu"))
    assert gpu["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker-gpu"
    assert pod_spec(gpu)["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for deployment in (base, gpu):
        deployment["metadata"]["name"] = "worker"
        for labels in (
            deployment["metadata"]["labels"],
            deployment["spec"]["selector"]["matchLabels"],
            deployment["spec"]["template"]["metadata"]["labels"],
            *(c["labelSelector"]["matchLabels"] for c in pod_spec(deployment)["topologySpreadConstraints"]),
        ):
            labels["app.kubernetes.io/component"] = "worker"
        pod_spec(deployment).pop("tolerations", None)
        worker = container(deployment)
        worker.pop("resources")
        worker["env"] = sorted((e for e in worker["env"] if e["name"] not in GPU_ONLY_ENV), key=lambda e: e["name"])
    assert gpu == base  # image, probes, grace, security, envFrom, metrics, volumes: the base's; they cannot drift


def test_each_value_location_finds_its_queue_in_what_the_api_writes(rendered: dict[str, list[Doc]]) -> None:
    locations = [
        trigger["metadata"]["valueLocation"]
        for doc in of_kind(rendered["queue-pools"], "ScaledObject")
        for trigger in doc["spec"]["triggers"]
    ]
    queues = [m.group("queue") for m in map(SELECTOR.fullmatch, locations) if m]
    assert len(queues) == len(locations) == 2, locations
    # The API's own gauges, as its /metrics writes them, with a queue whose name extends another's.
    metrics = ApiMetrics()
    values = {queue: float(10 + n) for n, queue in enumerate(queues)}
    for queue, value in values.items():
        metrics.named_active.labels(queue=queue).set(value)
        metrics.named_active.labels(queue=f"{queue}-spot").set(99)
    metrics.queue_active.set(99)
    samples = [line for line in generate_latest(metrics.registry).decode().splitlines() if not line.startswith("#")]
    for location, queue in zip(locations, queues, strict=True):
        assert SELECTOR.fullmatch(location)["name"] == contract.NAMED_QUEUE_GAUGE  # type: ignore[index]
        # KEDA 2.15 reads the first sample line that starts with valueLocation (2.16 matches it as a selector):
        # written as the API writes it, exactly one line does, and it is this queue's.
        (line,) = [s for s in samples if s.startswith(location)]
        assert float(line.split()[-1]) == values[queue]
