"""The Dockerfile, compose and the manifests agree with each other and with the application itself."""

from __future__ import annotations

import importlib.util
import re
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from pydantic import SecretStr

from shared.settings import Settings
from tests.deploy import tools
from tests.deploy.contract import (
    API_COMMAND,
    LIVE_PATH,
    METRICS_PATH,
    PORT,
    QUEUE_DEPTH_GAUGE,
    READY_PATH,
    WORKER_COMMAND,
)
from tests.deploy.dockerfile import Dockerfile
from tests.deploy.manifests import (
    Doc,
    configmap_data,
    container,
    container_port,
    literal_env,
    named,
    pod_spec,
    relay_deployments,
    resolve,
    seconds,
    workloads,
)

SECRET_FIELDS = {name for name, f in Settings.model_fields.items() if f.annotation is SecretStr}


def relay_env_sources(
    image: Dockerfile, compose: dict[str, Any], rendered: dict[str, list[Doc]]
) -> dict[str, dict[str, str]]:
    """Every place a deploy artefact sets environment variables, by a name for the error message."""
    sources = {"Dockerfile": image.final.env()}
    for name, service in compose["services"].items():
        sources[f"compose:{name}"] = dict(service.get("environment", {}))
    for tree, docs in rendered.items():
        sources[f"{tree}:ConfigMap"] = configmap_data(docs, "relay-config")
        for workload in workloads(docs):
            for c in pod_spec(workload)["containers"]:
                sources[f"{tree}:{workload['metadata']['name']}/{c['name']}"] = literal_env(c)
    example = yaml.safe_load((tools.K8S / "base" / "secret.example.yaml").read_text())
    sources["secret.example.yaml"] = example["stringData"]
    return sources


def test_every_relay_variable_is_a_settings_field(
    image: Dockerfile, compose: dict[str, Any], rendered: dict[str, list[Doc]]
) -> None:
    for where, env in relay_env_sources(image, compose, rendered).items():
        relay = {k: v for k, v in env.items() if k.startswith("RELAY_")}
        unknown = {k for k in relay if k.removeprefix("RELAY_").lower() not in Settings.model_fields}
        assert not unknown, f"{where} sets variables Settings ignores (extra='ignore' hides typos): {unknown}"
        values = {k.removeprefix("RELAY_").lower(): v for k, v in relay.items() if "${" not in str(v)}
        Settings.model_validate(values)  # raises if a value would not parse, e.g. "25s" for an int


def test_secrets_stay_out_of_configmaps_and_the_image(image: Dockerfile, rendered: dict[str, list[Doc]]) -> None:
    assert SECRET_FIELDS, "Settings is expected to mark secrets as SecretStr"
    secret_vars = {f"RELAY_{name.upper()}" for name in SECRET_FIELDS}
    assert not secret_vars & set(image.final.env())
    for tree, docs in rendered.items():
        assert not secret_vars & set(configmap_data(docs, "relay-config")), tree


@pytest.mark.parametrize("tree", list(tools.kustomizations()))
def test_relay_pods_load_the_secret_after_the_configmap(rendered: dict[str, list[Doc]], tree: str) -> None:
    example = yaml.safe_load((tools.K8S / "base" / "secret.example.yaml").read_text())
    names = [d["metadata"]["name"] for d in relay_deployments(rendered[tree])]
    assert {"relay-api", "relay-worker"} <= set(names)
    for name in names:  # the API and every worker pool
        sources = container(named(rendered[tree], "Deployment", name))["envFrom"]
        kinds = [next(iter(s)) for s in sources]
        assert kinds == ["configMapRef", "secretRef"], "the Secret must be able to override RELAY_REDIS_URL"
        assert sources[0]["configMapRef"]["name"].startswith("relay-config-")
        assert sources[1]["secretRef"] == {"name": example["metadata"]["name"]}, "not optional: fail closed"


def test_one_api_command_everywhere(image: Dockerfile, compose: dict[str, Any], base: list[Doc]) -> None:
    cmd = image.final.last("CMD")
    assert cmd is not None
    assert cmd.exec_form() == API_COMMAND
    assert compose["services"]["api"]["command"] == API_COMMAND
    assert container(named(base, "Deployment", "relay-api"))["command"] == API_COMMAND
    module, _, factory = API_COMMAND[1].partition(":")
    assert importlib.util.find_spec(module) is not None
    assert factory == "create_app"


def test_one_worker_command_everywhere(compose: dict[str, Any], base: list[Doc]) -> None:
    assert compose["services"]["worker"]["command"] == WORKER_COMMAND
    assert container(named(base, "Deployment", "relay-worker"))["command"] == WORKER_COMMAND
    assert importlib.util.find_spec(WORKER_COMMAND[1]) is not None


def test_one_port_everywhere(image: Dockerfile, compose: dict[str, Any], base: list[Doc]) -> None:
    assert int(API_COMMAND[API_COMMAND.index("--port") + 1]) == PORT
    assert [i.args for i in image.final.all("EXPOSE")] == [str(PORT)]
    (published,) = compose["services"]["api"]["ports"]
    assert resolve(published).endswith(f":{PORT}")
    health_url = re.search(r"http://[^']+", compose["services"]["api"]["healthcheck"]["test"][3])
    assert health_url
    assert urlparse(health_url.group(0)).port == PORT
    api = container(named(base, "Deployment", "relay-api"))
    assert [p["containerPort"] for p in api["ports"]] == [PORT]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container_port(api, api[probe]["httpGet"]["port"]) == PORT
    (service_port,) = named(base, "Service", "relay-api")["spec"]["ports"]
    assert container_port(api, service_port["targetPort"]) == PORT


def test_redis_is_the_same_image_in_compose_and_kubernetes(compose: dict[str, Any], base: list[Doc]) -> None:
    assert container(named(base, "StatefulSet", "relay-redis"))["image"] == compose["services"]["redis"]["image"]


def test_probed_paths_are_real_get_routes(make_app: Any, compose: dict[str, Any], base: list[Doc]) -> None:
    routes = {(route.path, method) for route in make_app().router.routes for method in route.methods}
    api = container(named(base, "Deployment", "relay-api"))
    scaled = named(base, "ScaledObject", "relay-worker")
    compose_url = re.search(r"http://[^']+", compose["services"]["api"]["healthcheck"]["test"][3])
    assert compose_url is not None
    paths = {
        api["readinessProbe"]["httpGet"]["path"],
        api["livenessProbe"]["httpGet"]["path"],
        urlparse(compose_url.group(0)).path,
        urlparse(scaled["spec"]["triggers"][0]["metadata"]["url"]).path,
    }
    assert paths == {READY_PATH, LIVE_PATH, METRICS_PATH}
    for path in paths:
        assert (path.lstrip("/"), "GET") in routes, f"{path} is not a GET route of create_app()"


def test_metrics_expose_the_gauge_keda_scales_on(base: list[Doc]) -> None:
    from prometheus_client import generate_latest

    from api import metrics

    value_location = named(base, "ScaledObject", "relay-worker")["spec"]["triggers"][0]["metadata"]["valueLocation"]
    assert value_location == QUEUE_DEPTH_GAUGE
    text = generate_latest(metrics.ApiMetrics().registry).decode()
    assert re.search(rf"^# TYPE {QUEUE_DEPTH_GAUGE} gauge$", text, re.MULTILINE), text


def worst_case_api_stop(app: Any, drain: float) -> float:
    """Sanic's stop sequence: the app's drain listener (drain + close margin), then Sanic's own wait."""
    from api import lifecycle

    return drain + lifecycle.CLOSE_MARGIN_SECONDS + float(app.config.GRACEFUL_SHUTDOWN_TIMEOUT)


def test_api_stop_budgets_cover_the_real_shutdown(make_app: Any, compose: dict[str, Any], base: list[Doc]) -> None:
    config = configmap_data(base, "relay-config")
    drain = float(config["RELAY_API_DRAIN_SECONDS"])
    deployment = named(base, "Deployment", "relay-api")
    pre_stop = int(container(deployment)["lifecycle"]["preStop"]["exec"]["command"][1])
    k8s_stop = pre_stop + worst_case_api_stop(make_app(config), drain)
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > k8s_stop

    env = compose["services"]["api"]["environment"]
    drain = float(env["RELAY_API_DRAIN_SECONDS"])
    compose_env = {k: v for k, v in env.items() if "${" not in v}
    assert seconds(compose["services"]["api"]["stop_grace_period"]) > worst_case_api_stop(make_app(compose_env), drain)


def test_sanic_variables_set_by_deploy_files_take_effect(
    make_app: Any, compose: dict[str, Any], rendered: dict[str, list[Doc]]
) -> None:
    """create_app() may override Sanic's environment config; a SANIC_* variable it overrides is dead config."""
    sanic_env: dict[str, str] = {
        k: v for k, v in compose["services"]["api"].get("environment", {}).items() if k.startswith("SANIC_")
    }
    for docs in rendered.values():
        sanic_env |= {
            k: v
            for k, v in literal_env(container(named(docs, "Deployment", "relay-api"))).items()
            if k.startswith("SANIC_")
        }
    app = make_app(sanic_env)
    for key, value in sanic_env.items():
        effective = app.config[key.removeprefix("SANIC_")]
        assert same_value(effective, value), f"{key}={value} is overridden by create_app() (it is {effective!r})"


def same_value(effective: Any, raw: str) -> bool:
    """Compare a config value with the string an environment variable gave (Sanic casts numbers)."""
    try:
        return float(effective) == float(raw)
    except (TypeError, ValueError):
        return str(effective) == raw
