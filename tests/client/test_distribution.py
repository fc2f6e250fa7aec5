"""The client's own distribution (clients/python): it installs alone, without the server and its dependencies.

Installing the server's pyproject for the client brought Sanic, arq and the Azure SDKs, and top-level ``api``,
``worker`` and ``shared`` packages that shadow a user project's own ``worker/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.heavy import heavy

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib.util, json
import relay.client, relay.cli
try:
    import relay.tasks
    tasks = "imported"
except ModuleNotFoundError as exc:
    tasks = str(exc)
server = ("sanic", "arq", "azure", "redis", "pydantic", "api", "worker", "shared")
present = [m for m in server if importlib.util.find_spec(m)]
print(json.dumps({"client": relay.client.Client.__name__, "present": present, "tasks": tasks}))
"""


@heavy
@pytest.mark.timeout(600)  # a venv and an install from the local index: tens of seconds
def test_the_client_installs_alone(tmp_path: Path) -> None:
    # A copy of what the build reads (clients/python's pyproject points at ../../relay), so the build's
    # scratch files (build/, *.egg-info) land in the copy, not in the checkout.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "clients" / "python", source / "clients" / "python")
    shutil.copytree(ROOT / "relay", source / "relay", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", str(source / "clients" / "python")]
    done = subprocess.run(install, capture_output=True, text=True, timeout=500, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    checked = subprocess.run(
        [str(python), "-c", CHECK], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=True
    )
    facts = json.loads(checked.stdout)
    assert facts["client"] == "Client"
    assert facts["present"] == []  # no server dependency, and no top-level package but relay
    assert "needs the server package" in facts["tasks"]
    helped = subprocess.run([str(venv / "bin" / "relay"), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    assert "Submit Relay tasks" in helped.stdout
