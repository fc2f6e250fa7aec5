"""Prometheus can find and reach every Relay process the artefacts start: the API's /metrics on its serving
port, and each worker's own metrics server on the port (and all addresses) its settings name."""

from __future__ import annotations

from typing import Any

import pytest

from shared.settings import Settings
from tests.deploy import tools
from tests.deploy.contract import METRICS_PATH, PORT, WORKER_COMMAND
from tests.deploy.manifests import Doc, configmap_data, container, container_port, named, pod_spec, worker_pools

WORKER_SERVICES = ("worker", "worker-servicebus")


def annotations(workload: Doc) -> dict[str, str]:
    found: dict[str, str] = workload["spec"]["template"]["metadata"].get("annotations", {})
    return found


@pytest.mark.parametrize("tree", list(tools.kustomizations()))
def test_worker_pods_announce_the_port_their_metrics_server_listens_on(
    rendered: dict[str, list[Doc]], tree: str
) -> None:
    docs = rendered[tree]
    config = Settings.model_validate(
        {k.removeprefix("RELAY_").lower(): v for k, v in configmap_data(docs, "relay-config").items()}
    )
    assert config.worker_metrics_port != 0
    assert config.worker_metrics_host == "0.0.0.0"  # reachable at the pod's IP, not only on its loopback
    pools = worker_pools(docs, WORKER_COMMAND)  # the base's workers, or each pool of named queues
    assert "relay-worker" in [pool["metadata"]["name"] for pool in pools]
    for worker in pools:
        marks = annotations(worker)
        assert marks["prometheus.io/scrape"] == "true"
        assert marks["prometheus.io/path"] == METRICS_PATH
        assert int(marks["prometheus.io/port"]) == config.worker_metrics_port, worker["metadata"]["name"]
        assert container_port(container(worker), "metrics") == config.worker_metrics_port


@pytest.mark.parametrize("tree", list(tools.kustomizations()))
def test_api_pods_announce_their_metrics_on_the_serving_port(rendered: dict[str, list[Doc]], tree: str) -> None:
    api = named(rendered[tree], "Deployment", "relay-api")
    marks = annotations(api)
    assert marks["prometheus.io/scrape"] == "true"
    assert marks["prometheus.io/path"] == METRICS_PATH
    assert int(marks["prometheus.io/port"]) == container_port(container(api), "http") == PORT
    assert len(pod_spec(api)["containers"]) == 1


def test_compose_workers_serve_metrics_on_the_compose_network(compose: dict[str, Any]) -> None:
    for name in WORKER_SERVICES:
        service = compose["services"][name]
        env = service["environment"]
        port = int(env["RELAY_WORKER_METRICS_PORT"])
        assert env["RELAY_WORKER_METRICS_HOST"] == "0.0.0.0", name
        assert [int(p) for p in service["expose"]] == [port], name
        assert "ports" not in service, f"{name}: scaled workers cannot share a host port"
