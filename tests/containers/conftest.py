"""Fixtures for the container tests: the engine, the base images, the Relay image and one Compose project.

Run by ``scripts/container-test`` only (pyproject's addopts keep this directory out of ``scripts/test``).
Everything started here is removed when the session ends, pass or fail: the Compose project's containers,
networks and volumes, and the dockerd if this session started it. Images stay: they are the cache that makes
the next run fast.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers import measure, standins
from tests.containers.compose import REPO, Stack, compose_project
from tests.containers.engine import Engine, docker_engine

PROJECT = "relay-container-test"
IMAGE = "relay:container-test"
# Test modules in the order a deploy happens; the stack is shared, so later ones build on earlier ones.
ORDER = ["test_image", "test_stack", "test_rollout", "test_shutdown", "test_cluster_stack"]
UP_SECONDS = 180
BUILD_SECONDS = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    ours = [i for i in items if i.path.is_relative_to(here)]
    for item in ours:
        item.add_marker(pytest.mark.containers)
    items.sort(key=lambda i: ORDER.index(i.path.stem) if i.path.stem in ORDER else len(ORDER))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if measure.lines():
        terminalreporter.section("container measurements")
        for line in measure.lines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(saved to {measure.save()})")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Logs of this session (dockerd, stand-in builds, the containers'), kept after the run for reading."""
    logs = measure.REPORT_PATH.parent / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    return logs


@pytest.fixture(scope="session")
def engine(artifacts: Path) -> Iterator[Engine]:
    with docker_engine(artifacts) as found:
        version = found.run("version", "--format", "{{.Server.Version}}").stdout.strip()
        origin = f"started here (pid {found.started_pid})" if found.started_pid else "already running"
        measure.record("docker engine", f"{version}, {origin}")
        measure.record("docker build", found.builder)
        yield found


@pytest.fixture(scope="session")
def base_images(engine: Engine, artifacts: Path) -> None:
    """The registry images the project names, present locally (real ones, or stand-ins built once)."""
    for standin in (standins.python(), standins.REDIS):
        start = time.monotonic()
        origin = standins.ensure(engine, standin, artifacts)
        measure.record(f"base {standin.name}", f"{origin}, {time.monotonic() - start:.1f} s")


def image_size_mb(engine: Engine, name: str) -> float:
    return float(engine.inspect(name)[0]["Size"]) / 1e6


@pytest.fixture(scope="session")
def relay_image(engine: Engine, base_images: None) -> str:
    """The project's Dockerfile built twice: without any cache (cold), then again (warm, all cached)."""
    previous = engine.inspect(IMAGE)[0]["Id"] if engine.image_exists(IMAGE) else None
    with measure.timed("build cold (--no-cache), s"):
        engine.run("build", "--no-cache", "--tag", IMAGE, str(REPO), timeout=BUILD_SECONDS, env=engine.build_env())
    with measure.timed("build warm (cache, no change), s"):
        engine.run("build", "--tag", IMAGE, str(REPO), timeout=BUILD_SECONDS, env=engine.build_env())
    current = engine.inspect(IMAGE)[0]["Id"]
    if previous and previous != current:
        engine.run("image", "rm", previous, check=False)  # our own last build, now untagged
    measure.record("image size, MB", image_size_mb(engine, IMAGE))
    measure.record("  of which base python:3.11-slim-bookworm, MB", image_size_mb(engine, standins.PYTHON_IMAGE))
    return IMAGE


@pytest.fixture(scope="session")
def stack(engine: Engine, relay_image: str, artifacts: Path) -> Iterator[Stack]:
    """Relay's compose project under its own name, with a fresh Redis password and API key; removed at the end."""
    with compose_project(engine, artifacts, PROJECT, relay_image, "RELAY_API_PUBLISH") as project:
        measure.record("compose", " ".join(project.command[-1:]) + " " + project.version())
        yield project


@pytest.fixture
def running(stack: Stack) -> Stack:
    """The stack up with its default two workers, every container healthy."""
    stack.up(workers=2, timeout=UP_SECONDS)
    return stack
