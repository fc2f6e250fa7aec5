"""The Dockerfile lints clean under hadolint and builds the image the deploy files assume."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy import contract, tools
from tests.deploy.dockerfile import Dockerfile

SECRETISH = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|CREDENTIAL|PRIVATE)", re.IGNORECASE)
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "git", "curl", "wget")


def hadolint(source: str) -> list[dict[str, object]]:
    """hadolint's findings (all severities, style included) for a Dockerfile given as text."""
    result = tools.run([tools.tool("hadolint"), "--no-color", "--format", "json", "-"], stdin=source)
    assert result.stdout.strip(), f"hadolint printed nothing: {result.stderr}"
    findings: list[dict[str, object]] = json.loads(result.stdout)
    return findings


def test_hadolint_reports_nothing() -> None:
    findings = hadolint((tools.REPO / "Dockerfile").read_text())
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_catches_a_bad_dockerfile() -> None:
    """Proves the linter runs and judges: shell-form CMD and a root final user are flagged."""
    codes = {f["code"] for f in hadolint("FROM python:3.11-slim\nUSER root\nCMD sanic api.app\n")}
    assert {"DL3025", "DL3002"} <= codes


def test_multi_stage_with_slim_python_runtime(image: Dockerfile) -> None:
    assert len(image.stages) >= 2, "builder and runtime stages expected"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image.resolve(image.final.base))
    builder_names = {s.name for s in image.stages[:-1]}
    copies = [i.args for i in image.final.all("COPY")]
    assert copies, "the runtime stage must copy the built venv"
    for args in copies:
        source_stage = re.search(r"--from=(\S+)", args)
        assert source_stage is not None, f"runtime COPY not from a stage: {args}"
        assert source_stage.group(1) in builder_names, f"runtime COPY not from builder: {args}"


def test_runtime_stage_runs_no_package_manager_or_build_tools(image: Dockerfile) -> None:
    for run in image.final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|pip)\s+install\b", run.args), f"install in runtime stage: {run.args}"
        for tool_name in BUILD_TOOLS:
            assert not re.search(rf"(^|\s){re.escape(tool_name)}(\s|$)", run.args), run.args


def test_runs_as_a_numeric_non_root_user(image: Dockerfile) -> None:
    user = image.final.last("USER")
    assert user is not None, "the final stage must set USER"
    uid = user.args.split(":")[0]
    assert uid.isdigit(), f"USER must be numeric: runAsNonRoot cannot verify a name ({uid})"
    assert int(uid) > 0, "USER must not be root"


def test_default_command_is_the_api_in_exec_form(image: Dockerfile) -> None:
    cmd = image.final.last("CMD")
    assert cmd is not None
    assert cmd.exec_form() == contract.API_COMMAND, "exec form keeps the server as PID 1 (SIGTERM)"
    entrypoint = image.final.last("ENTRYPOINT")
    assert entrypoint is None or entrypoint.exec_form() is not None
    assert [i.args for i in image.final.all("EXPOSE")] == [str(contract.PORT)]


def test_python_runtime_environment(image: Dockerfile) -> None:
    env = image.final.env()
    assert env.get("PYTHONUNBUFFERED") == "1", "logs must not sit in a buffer when the pod dies"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "the root filesystem is read-only in Kubernetes"
    assert env.get("HOME", "").startswith("/tmp"), "HOME must be on the one writable mount"
    assert env.get("PATH", "").startswith("/opt/venv/bin"), "sanic and arq must resolve from the venv"


def test_no_secret_looking_build_args_or_env(image: Dockerfile) -> None:
    names = list(image.global_args)
    for stage in image.stages:
        names += [i.args.split("=")[0].split()[0] for i in stage.all("ARG")]
        names += list(stage.env())
    assert not [n for n in names if SECRETISH.search(n)], "secrets would persist in image history"


def dockerignore_patterns() -> list[str]:
    """The .dockerignore patterns, in order, without comments and blank lines."""
    lines = (line.strip() for line in (tools.REPO / ".dockerignore").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        if any(fnmatch.fnmatch(c, glob) or fnmatch.fnmatch(c.split("/")[-1], glob) for c in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        ".env",
        "tests/e2e/test_x.py",
        "k8s/base/secret.example.yaml",
        "api/__pycache__/app.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    patterns = dockerignore_patterns()
    assert dockerignore_excludes(path, patterns)


def test_dockerignore_lets_in_everything_the_dockerfile_copies(image: Dockerfile) -> None:
    patterns = dockerignore_patterns()
    builder = image.stages[0]
    sources = [word for i in builder.all("COPY") for word in i.args.split()[:-1] if not word.startswith("--")]
    assert sources
    for source in sources:
        for path in tools.REPO.glob(source.rstrip("/")):
            assert not dockerignore_excludes(path.relative_to(tools.REPO).as_posix(), patterns), source


def test_the_image_gets_the_dashboard_files_the_api_serves(image: Dockerfile, tmp_path: Path) -> None:
    """What the builder stage copies, installed the way it installs it (a wheel, not editable), carries the
    dashboard's page, script and stylesheet: the API serves them from the installed package."""
    from api.routes.dashboard import FILES

    source = tmp_path / "src"
    source.mkdir()
    builder = image.stages[0]
    for instruction in builder.all("COPY"):
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        for pattern in words[:-1]:
            for path in tools.REPO.glob(pattern.rstrip("/")):
                target = source / path.relative_to(tools.REPO)
                if path.is_dir():
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(path, target)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("relay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"api/dashboard/{name}" for name in FILES} <= names
    assert "shared/lua/enqueue.lua" in names
