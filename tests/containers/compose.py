"""The project's docker-compose.yml run as one Compose project of this test session's own.

Works with Compose v2 (``docker compose``) and with docker-compose 1.29 (Debian's): the project name is given
with ``-p``, never in the file. Variables come only from this session's env file, never from the caller's
shell or a developer's ``.env``. Containers are found by Compose's labels, not by names (the two Compose
versions name them differently).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    # Compose profiles enabled on every command (``--profile``), so ``down`` and ``logs`` see their services too.
    profiles: tuple[str, ...] = ()

    def compose(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, "--project-name", self.project, "--file", str(COMPOSE_FILE)]
        argv += [arg for profile in self.profiles for arg in ("--profile", profile)]
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

    def up_services(self, started: dict[str, int], healthy: dict[str, int], timeout: float) -> None:
        """``up -d`` of the ``started`` services at these scales (and what they depend on, which Compose starts
        and waits for first), then wait until the ``healthy`` ones are: a profile's entry points need not be all
        of what it runs."""
        scales = [arg for service, n in started.items() for arg in ("--scale", f"{service}={n}")]
        self.compose("up", "--detach", "--no-build", *scales, *started, timeout=timeout)
        self.wait_healthy(healthy, timeout)

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


def free_port() -> int:
    """A loopback port free now, for a project's published API (each project its own, beside any other)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def compose_project(
    engine: Engine,
    artifacts: Path,
    name: str,
    image: str,
    publish_variable: str,
    profiles: tuple[str, ...] = (),
    secrets_env: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """A Compose project of the file under its own name, with a fresh Redis password and API key (and a fresh
    value for each of ``secrets_env``) in its own env file, the API published on a free loopback port through
    ``publish_variable``. Taken down (containers, networks, volumes) before and after, pass or fail."""
    port = free_port()
    env_file = artifacts / f"{name}.env"
    env_file.touch(mode=0o600)
    password, api_key = secrets.token_hex(32), secrets.token_hex(16)
    env_file.write_text(
        f"RELAY_REDIS_PASSWORD={password}\n"
        f"RELAY_API_KEYS={api_key}\n"
        f"{publish_variable}=127.0.0.1:{port}\n"
        f"RELAY_IMAGE={image}\n" + "".join(f"{variable}={secrets.token_hex(32)}\n" for variable in secrets_env)
    )
    project = Stack(
        engine,
        compose_command(engine),
        name,
        env_file,
        api_base=f"http://127.0.0.1:{port}",
        api_key=api_key,
        redis_password=password,
        profiles=profiles,
    )
    project.down()  # what a crashed earlier run of this same project may have left
    try:
        yield project
    finally:
        (artifacts / f"{name}.log").write_text(project.logs(tail=10_000))
        project.down()
        env_file.unlink()  # its passwords guarded a stack that is gone; no secret is left lying around
