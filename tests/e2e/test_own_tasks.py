"""A project's own tasks, without forking Relay: a package of its own, named in RELAY_TASK_MODULES for the
workers. The API process has neither the package nor RELAY_TASK_MODULES: it validates submits against what
the live workers publish, lists each task's argument schema in /openapi.json, and refuses a task no live
worker offers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import textwrap
import uuid
from pathlib import Path

import httpx

from bench.harness.client import read_events, submit, types
from bench.harness.processes import BIN, REPO
from tests.conftest import StartApi, StartWorker

README = REPO / "README.md"

PACKAGE = '''
"""Acme's tasks: a project that depends on Relay."""

from typing import Annotated

from pydantic import Field

from relay.tasks import TaskContext, task


@task(timeout_seconds=30)
async def acme_resize(ctx: TaskContext, url: str, width: Annotated[int, Field(ge=1, le=4096)] = 800) -> dict:
    """Pretend to resize an image, reporting progress."""
    for step in range(1, 4):
        await ctx.progress(step, 3, f"step {step}")
    return {"url": url, "width": width}
'''


def make_project(root: Path) -> Path:
    package = root / "acme_tasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "imaging.py").write_text(textwrap.dedent(PACKAGE))
    return root


def test_a_project_runs_its_own_tasks_and_the_api_needs_none_of_their_code(
    tmp_path: Path, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    project = make_project(tmp_path)
    queue = f"relay:own:{uuid.uuid4().hex[:8]}"
    # The API knows nothing of acme_tasks: no module, no path to it, and no test offers.
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    refused = submit(base, {"task": "acme_resize", "kwargs": {"url": "u"}})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "unknown_task"
    assert "no worker is running on this queue" in refused.json()["error"]["message"]

    spawn_worker(
        RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES="acme_tasks.imaging", PYTHONPATH=str(project)
    )  # `arq worker.settings`, pointed at the project's module
    bad = submit(base, {"task": "acme_resize", "kwargs": {"url": "u", "width": 0}})
    assert bad.status_code == 422  # checked against the schema the worker published
    assert bad.json()["error"]["details"][0]["loc"] == ["width"]
    unknown = submit(base, {"task": "echo"})
    assert unknown.json()["error"]["details"] == {"registered": ["acme_resize"]}

    document = httpx.get(f"{base}/openapi.json", timeout=10).json()
    arguments = document["components"]["schemas"]["acme_resize.arguments"]
    assert arguments["properties"]["width"]["maximum"] == 4096
    assert document["x-relay-tasks"]["acme_resize"]["timeout_seconds"] == 30
    assert document["components"]["schemas"]["TaskSubmission"]["properties"]["task"]["enum"] == ["acme_resize"]

    # docs/tasks.md's promise: the CLI submits it and follows it to its result.
    env = {**os.environ, "RELAY_URL": base}
    run = subprocess.run(
        [str(BIN / "relay"), "submit", "acme_resize", "--arg", "url=https://x/y.png", "--arg", "width=64", "--follow",
         "--json"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert types(events) == ["started", "progress", "progress", "progress", "result", "end"]
    assert events[-2]["data"] == {"url": "https://x/y.png", "width": 64}
    assert read_events(base, events[0]["task_id"])[-1]["data"] == {"state": "succeeded"}


def test_the_readmes_first_task_runs_as_written(tmp_path: Path, spawn_api: StartApi, spawn_worker: StartWorker) -> None:
    """The README's "Your first task": its module as printed, a worker told to run it, and the CLI line that
    submits it and follows it to its result."""
    text = README.read_text()
    section = text[text.index("\n## Your first task\n") : text.index("\n## The Python client\n")]
    module, commands = re.findall(r"^```(?:python|sh)\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    package = tmp_path / "myproject"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(module)
    assert "scripts/dev --tasks myproject.tasks" in commands
    queue = f"relay:first:{uuid.uuid4().hex[:8]}"
    spawn_worker(RELAY_QUEUE_NAME=queue, RELAY_TASK_MODULES="myproject.tasks", PYTHONPATH=str(tmp_path))
    _, base = spawn_api(RELAY_QUEUE_NAME=queue, offers=False)
    submit_line = next(line for line in commands.splitlines() if "relay submit" in line)
    argv = shlex.split(submit_line.split("#", 1)[0].replace(".venv/bin/relay", str(BIN / "relay"), 1))
    env = {**os.environ, "RELAY_URL": base}
    run = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert types(events) == ["started", "progress", "result", "end"]
    assert events[-2]["data"] == {"url": "https://example.com/a.png", "width": 64}
