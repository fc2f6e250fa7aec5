"""``arq worker.settings`` runs its worker on uvloop unless RELAY_WORKER_UVLOOP=false (a fresh process each:
the choice is a process-wide event loop policy)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import asyncio, worker.settings; print(type(asyncio.new_event_loop()).__module__)"


@pytest.mark.parametrize(("setting", "loop_module"), [(None, "uvloop"), ("false", "asyncio.unix_events")])
def test_the_worker_loop_follows_the_setting(setting: str | None, loop_module: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_TASK_MODULES"] = "worker.tasks.demo"
    if setting is not None:
        env["RELAY_WORKER_UVLOOP"] = setting
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1] == loop_module
