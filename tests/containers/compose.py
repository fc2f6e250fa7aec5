"""The project's docker-compose.yml run as one Compose project of this test session's own.

Works with Compose v2 (``docker compose``) and with docker-compose 1.29 (Debian's): the project name is given
with ``-p``, never in the file. Variables come only from this session's env file, never from the caller's
shell or a developer's ``.env``. Containers are found by Compose's labels, not by names (the two Compose
versions name them differently).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.containers.engine import DockerError, Engine
from tests.deploy.manifests import seconds

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
# What the subprocess may see of our environment: enough to find docker, nothing that Compose would interpolate.
PASSED_ENV = ("PATH", "HOME", "LANG", "DOCKER_HOST", "DOCKER_CONFIG")

Container = dict[str, Any]


def compose_command(engine: Engine) -> list[str]:
    """``docker compose`` (v2) if the CLI has it, else docker-compose (1.x)."""
    probe = subprocess.run([engine.cli, "compose", "version"], capture_output=True, timeout=30, check=False)
    if probe.returncode == 0:
        return [engine.cli, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        raise DockerError("neither `docker compose` nor docker-compose: apt-get install docker-compose")
    return [legacy]


def service_config(name: str) -> dict[str, Any]:
    """A service as the file declares it (anchors resolved, variables not interpolated)."""
    service: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]
    return service


def grace_seconds(name: str) -> float:
    """The service's stop_grace_period: how long Docker waits after SIGTERM before SIGKILL."""
    return seconds(service_config(name)["stop_grace_period"])


@dataclass
class Stack:
    """One Compose project: its name, its variables (an env file) and the engine it runs on."""

    engine: Engine
    command: list[str]
    project: str
    env_file: Path
    api_base: str
    api_key: str
    redis_password: str

    def compose(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, "--project-name", self.project, "--file", str(COMPOSE_FILE)]
        argv += ["--env-file", str(self.env_file), *args]
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if check and result.returncode != 0:
            raise DockerError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def version(self) -> str:
        return self.compose("version", "--short", timeout=30).stdout.strip()

    def up(self, workers: int, timeout: float) -> None:
        """``up -d`` with this many workers (the image is built already), then wait until all are healthy."""
        self.compose("up", "--detach", "--no-build", "--scale", f"worker={workers}", timeout=timeout)
        self.wait_healthy({"redis": 1, "api": 1, "worker": workers}, timeout)

    def containers(self, service: str | None = None, *, stopped: bool = True) -> list[Container]:
        """This project's containers (inspected), oldest first; only running ones unless ``stopped``."""
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service is not None:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.engine.run("ps", "-q", *(["-a"] if stopped else []), *filters).stdout.split()
        return sorted(self.engine.inspect(*ids), key=lambda c: str(c["Created"]))

    def wait_healthy(self, expected: dict[str, int], timeout: float) -> None:
        """Until each service has exactly the expected number of running containers, all healthy."""
        deadline = time.monotonic() + timeout
        states: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            states = {s: [health(c) for c in self.containers(s, stopped=False)] for s in expected}
            if all(len(states[s]) == n and set(states[s]) <= {"healthy"} for s, n in expected.items()):
                return
            time.sleep(0.5)
        raise DockerError(f"services not healthy within {timeout}s: {states}\n{self.logs()}")

    def logs(self, *services: str, tail: int = 60) -> str:
        result = self.compose("logs", "--no-color", "--tail", str(tail), *services, check=False, timeout=60)
        return result.stdout + result.stderr

    def down(self) -> None:
        """Remove every container, network and volume of this project (and only of this project)."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "60", timeout=300)


def health(container: Container) -> str:
    """``healthy``, ``starting``, ``unhealthy``, or the container's status when it has no health check."""
    state = container["State"]
    if state.get("Health"):
        return str(state["Health"]["Status"])
    return str(state["Status"])
