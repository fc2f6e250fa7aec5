"""The Docker engine the container tests use: the one already running, or a dockerd started here.

A dockerd started here is stopped by its own PID when the session ends, pass or fail; one that was already
running is left alone. Every call to the CLI has a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINE_START_SECONDS = 60
ENGINE_STOP_SECONDS = 60
# The docker.io package's CLI; a newer CLI on PATH may lack buildx and fall back to the legacy builder.
PACKAGED_CLI = "/usr/bin/docker"


class DockerError(AssertionError):
    """A docker command failed; the message carries its output."""


@dataclass
class Engine:
    """A reachable Docker engine and the CLI to drive it with."""

    cli: str
    buildkit: bool
    started_pid: int | None = None

    def run(
        self,
        *args: str,
        timeout: float = 60,
        check: bool = True,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker <args>``; raise with its output if it fails and ``check`` is set."""
        result = subprocess.run(
            [self.cli, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        if check and result.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def inspect(self, *ids: str) -> list[dict[str, Any]]:
        """``docker inspect`` as data (containers or images)."""
        if not ids:
            return []
        found: list[dict[str, Any]] = json.loads(self.run("inspect", *ids).stdout)
        return found

    def image_exists(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0

    @property
    def builder(self) -> str:
        """How ``docker build`` builds here, for the report."""
        return "BuildKit" if self.buildkit else "legacy builder (this docker CLI has no buildx)"

    def build_env(self) -> dict[str, str]:
        return {"DOCKER_BUILDKIT": "1" if self.buildkit else "0"}


def answers(cli: str) -> bool:
    """Whether an engine answers this CLI now."""
    try:
        return subprocess.run([cli, "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def speaks_buildkit(cli: str) -> bool:
    """buildx present, or a CLI older than 23 (which hands BuildKit builds to the engine itself)."""
    if subprocess.run([cli, "buildx", "version"], capture_output=True, timeout=20, check=False).returncode == 0:
        return True
    version = subprocess.run(
        [cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=20, check=False
    ).stdout.strip()
    major = version.split(".")[0]
    return major.isdigit() and int(major) < 23


def pick_cli() -> tuple[str, bool]:
    """The docker CLI to use: the one on PATH, unless only the packaged one can build with BuildKit."""
    on_path = shutil.which("docker")
    candidates = [c for c in (on_path, PACKAGED_CLI) if c and Path(c).is_file()]
    if not candidates:
        raise DockerError("no docker CLI: apt-get install docker.io")
    for cli in candidates:
        if speaks_buildkit(cli):
            return cli, True
    return candidates[0], False


@contextmanager
def docker_engine(log_dir: Path) -> Iterator[Engine]:
    """The running engine, or a dockerd started for this session and stopped (by PID) afterwards."""
    cli, buildkit = pick_cli()
    if answers(cli):
        yield Engine(cli, buildkit)
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise DockerError("no Docker engine is running and dockerd is not installed: apt-get install docker.io")
    if os.geteuid() != 0:
        raise DockerError("no Docker engine is running, and starting dockerd needs root")
    log = (log_dir / "dockerd.log").open("wb")
    # Its own session: a Ctrl-C meant for pytest must not reach the engine before the cleanup has run.
    proc = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + ENGINE_START_SECONDS
        while not answers(cli):
            if proc.poll() is not None:
                raise DockerError(f"dockerd exited with {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise DockerError(f"dockerd did not answer within {ENGINE_START_SECONDS}s; see {log.name}")
            time.sleep(0.2)
        yield Engine(cli, buildkit, started_pid=proc.pid)
    finally:
        stop_by_pid(proc)
        log.close()


def stop_by_pid(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the dockerd we started (it stops its own containerd), SIGKILL only if it overstays."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(ENGINE_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
