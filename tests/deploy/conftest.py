"""Parsed deploy artefacts, shared by the deploy tests (each parsed or rendered once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy import dockerfile, tools
from tests.deploy.manifests import Doc


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    """Every kustomization (base and overlays) rendered by kubectl's kustomize, by short name."""
    return {name: tools.kustomize(path) for name, path in tools.kustomizations().items()}


@pytest.fixture(scope="session")
def base(rendered: dict[str, list[Doc]]) -> list[Doc]:
    """The rendered base."""
    return rendered["base"]


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml as data (YAML anchors and merge keys resolved, no variable interpolation)."""
    data: dict[str, Any] = yaml.safe_load((tools.REPO / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="session")
def image() -> dockerfile.Dockerfile:
    """The parsed Dockerfile."""
    return dockerfile.parse(tools.REPO / "Dockerfile")


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Build the real Sanic app under a given environment, without touching other tests' app registry.
    An app that cannot be imported fails these tests (it is never a reason to skip them)."""
    from sanic import Sanic

    import api.app as app_module
    from shared.settings import get_settings

    registry = dict(Sanic._app_registry)

    def build(env: dict[str, str] | None = None) -> Any:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        monkeypatch.setattr(Sanic, "test_mode", True)  # allows a second app with the same name
        return app_module.create_app()

    yield build
    get_settings.cache_clear()
    Sanic._app_registry.clear()
    Sanic._app_registry.update(registry)
