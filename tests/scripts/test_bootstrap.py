"""What scripts/bootstrap.sh installs for each script that sources it, in a copy of the scripts whose
``.venv/bin/python`` (and every tool they look for) only writes down how it was called."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = ["redis-server", "redis-sentinel", "busybox", "tmux", "chromium", "dpkg-query"]


def stub(path: Path, body: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> "$CALLS"\n{body}')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """scripts/dev, scripts/test, scripts/bootstrap.sh and .ci/run as they are, and stubs for what they call."""
    root = tmp_path / "relay"
    for name in ("scripts/dev", "scripts/test", "scripts/bootstrap.sh", ".ci/run"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    (root / "pyproject.toml").write_text("")
    stub(root / "scripts" / "container-test")
    for tool in ("python", "ruff", "mypy"):
        stub(root / ".venv" / "bin" / tool)
    for tool in TOOLS:  # present, so nothing is installed with apt
        stub(tmp_path / "bin" / tool, "echo 'install ok installed'\n" if tool == "dpkg-query" else "")
    return root


def run(tree: Path, command: str) -> list[str]:
    """Run ``command`` in the tree; the calls it made (pip installs, linters, pytest), in order."""
    calls = tree.parent / "calls"
    calls.write_text("")
    env = {
        "PATH": f"{tree.parent / 'bin'}:/usr/bin:/bin",
        "CALLS": str(calls),
        "HOME": str(tree.parent),
        "PYTHON": "false",  # .venv exists: no new virtualenv
    }
    subprocess.run(command.split(), cwd=tree, env=env, check=True, timeout=60)
    return [line for line in calls.read_text().splitlines() if not line.startswith(tuple(TOOLS))]


def test_dev_installs_only_what_running_needs(tree: Path) -> None:
    # It installed the whole dev extra (Playwright, schemathesis, mypy, kubectl: a 673 MB venv) to run the system.
    assert run(tree, "scripts/dev --help") == [
        "python -m pip install --quiet --upgrade pip",
        "python -m pip install --quiet -e .[otel]",
        "python scripts/devrun.py --help",
    ]
    assert run(tree, "scripts/dev") == ["python scripts/devrun.py"]  # installed once


def test_the_tests_add_the_dev_extra_and_then_dev_needs_nothing_more(tree: Path) -> None:
    run(tree, "scripts/dev --help")
    assert run(tree, "scripts/test -q") == [
        "python -m pip install --quiet --upgrade pip",
        "python -m pip install --quiet -e .[dev]",
        "python -m pytest -n 3 --dist loadgroup -q",
    ]
    assert run(tree, "scripts/dev") == ["python scripts/devrun.py"]  # the dev extra holds everything it needs


def test_ci_lints_with_the_dev_extra_installed(tree: Path) -> None:
    calls = run(tree, ".ci/run")
    assert calls[:4] == [
        "python -m pip install --quiet --upgrade pip",
        "python -m pip install --quiet -e .[dev]",
        "ruff check .",
        "ruff format --check api worker shared relay tests bench scripts",
    ]
    assert calls[4:] == [
        "mypy ",
        "python -m pytest -n 3 --dist loadgroup -q -p no:cacheprovider",
        "container-test -q",
    ]


def test_bootstrap_says_what_it_needs_to_be_told(tree: Path) -> None:
    env = {**os.environ, "PATH": f"{tree.parent / 'bin'}:/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", "-c", "source scripts/bootstrap.sh"], cwd=tree, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "usage: source scripts/bootstrap.sh run|dev" in done.stderr
