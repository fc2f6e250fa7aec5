"""The runtime image, built from the project's Dockerfile: uid 10001 on a read-only root, no build tools, no
sources but the installed venv.

The same checks run against the Dockerfile's builder stage and must find problems there (root, /src, the
sources): proof that they can fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.containers.compose import REPO, service_config
from tests.containers.engine import Engine

INSPECTOR = Path(__file__).with_name("inspect_image.py")
VENV = "/opt/venv/"
UID = GID = 10001


def project_sources() -> list[str]:
    """The project's modules as repo-relative paths (package markers left out: too common a name)."""
    return sorted(
        p.relative_to(REPO).as_posix()
        for package in ("api", "worker", "shared")
        for p in (REPO / package).rglob("*.py")
        if p.name != "__init__.py"
    )


def hardening_flags() -> list[str]:
    """docker run flags for exactly what compose applies to the API and workers."""
    api = service_config("api")
    flags = ["--read-only"] if api["read_only"] else []
    flags += [f"--tmpfs={path}" for path in api["tmpfs"]]
    flags += [f"--cap-drop={cap}" for cap in api["cap_drop"]]
    flags += [f"--security-opt={opt}" for opt in api["security_opt"]]
    return flags


def inspect_inside(engine: Engine, image: str) -> dict[str, Any]:
    """Run the inspector in a container of ``image``, hardened as compose does it, without a network."""
    result = engine.run(
        "run", "--rm", "-i", "--network=none", *hardening_flags(), "--entrypoint", "python", image,
        "-", json.dumps(project_sources()),
        stdin=INSPECTOR.read_text(),
        timeout=120,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def findings(report: dict[str, Any]) -> list[str]:
    """Everything wrong with a runtime image, as readable sentences (empty when it is right)."""
    problems = []
    if (report["uid"], report["gid"]) != (UID, GID):
        problems.append(f"runs as {report['uid']}:{report['gid']}, not {UID}:{GID}")
    if "ro" not in report["root_mount_options"]:
        problems.append(f"the root filesystem is writable: {report['root_mount_options']}")
    if not report["tmp_writable"]:
        problems.append("/tmp (HOME) is not writable")
    if report["tools"]:
        problems.append(f"build tools present: {report['tools']}")
    if report["src_exists"]:
        problems.append("/src exists")
    if report["workdir_entries"]:
        problems.append(f"the working directory {report['workdir']} holds {report['workdir_entries']}")
    for module, origin in report["modules"].items():
        if not (origin or "").startswith(VENV):
            problems.append(f"{module} is imported from {origin}, not from the venv")
    if report["project_copies_outside_venv"]:
        problems.append(f"project sources outside the venv: {report['project_copies_outside_venv']}")
    strays = sorted(set(report["python_outside_interpreter"]) - set(report["python_outside_dpkg_owned"]))
    if strays:
        problems.append(f".py files that are neither Python's, the venv's nor a Debian package's: {strays[:20]}")
    return problems


def test_the_runtime_image_is_non_root_read_only_and_holds_no_compilers_or_sources(
    engine: Engine, relay_image: str
) -> None:
    config = engine.inspect(relay_image)[0]["Config"]
    assert config["User"] == f"{UID}:{GID}"
    report = inspect_inside(engine, relay_image)
    assert findings(report) == []
    assert report["modules"]["api"].startswith(VENV)


def test_the_checks_find_what_the_builder_stage_holds(engine: Engine, relay_image: str) -> None:
    """The builder stage (root, compilers allowed, /src with the sources) must fail the same checks."""
    builder = f"{relay_image}-builder"
    engine.run("build", "--target", "builder", "--tag", builder, str(REPO), timeout=600, env=engine.build_env())
    try:
        problems = " | ".join(findings(inspect_inside(engine, builder)))
    finally:
        engine.run("image", "rm", builder, check=False)
    for expected in ("runs as 0:0", "/src exists", "/src/api/app.py"):
        assert expected in problems


@pytest.mark.parametrize("tool", ["gcc", "cc"])
def test_the_tool_check_sees_a_compiler(tool: str) -> None:
    """A report naming a compiler is a finding (the images here have none to find)."""
    clean = {
        "uid": UID,
        "gid": GID,
        "root_mount_options": ["ro"],
        "tmp_writable": True,
        "tools": {},
        "src_exists": False,
        "workdir": "/app",
        "workdir_entries": [],
        "modules": {"api": VENV + "lib/python3.11/site-packages/api/__init__.py"},
        "project_copies_outside_venv": [],
        "python_outside_interpreter": [],
        "python_outside_dpkg_owned": [],
    }
    assert findings(clean) == []
    (problem,) = findings({**clean, "tools": {tool: f"/usr/bin/{tool}"}})
    assert problem.startswith("build tools present")
    assert tool in problem
