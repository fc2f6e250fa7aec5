"""``arq worker.settings`` must load from a fresh process and hand arq nothing but its own arguments."""

from __future__ import annotations

import inspect
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import msgspec
import pytest
from arq.worker import Worker

import worker.settings
from shared.serialization import dumps, loads


def run_fresh(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python process with the demo tasks, as ``arq worker.settings`` starts."""
    env = {**os.environ, "RELAY_TASK_MODULES": "worker.tasks.demo"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True, timeout=60, env=env
    )


def test_settings_module_holds_only_arq_worker_arguments() -> None:
    public = {
        name
        for name, value in vars(worker.settings).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    allowed = set(inspect.signature(Worker).parameters)
    assert public <= allowed, public - allowed
    assert {"functions", "redis_settings", "job_serializer", "job_deserializer", "job_completion_wait"} <= public


def test_worker_settings_imports_from_a_fresh_process(tmp_path: Path) -> None:
    code = (
        "from arq.utils import import_string; s = import_string('worker.settings'); "
        "print(sorted(f.name for f in s.functions))"
    )
    out = run_fresh(code, tmp_path)
    assert out.stdout.strip() == "['add', 'count', 'echo', 'fail', 'mul', 'numbers', 'sleep', 'tsum']"


def test_arqs_cli_starts_the_worker_on_uvloop_with_the_loaded_code_frozen_out_of_the_gc(tmp_path: Path) -> None:
    """Importing the settings changes nothing in the importing process; arq's CLI start runs the worker on uvloop
    with the loaded code frozen (``worker.setup.tune_cli_process``): the start is faked here, the wrapper real."""
    code = """
import asyncio, gc, json, arq.cli
seen = {}
def start(settings_cls, **kwargs):
    seen["at start"] = [type(asyncio.get_event_loop_policy()).__module__, gc.get_freeze_count()]
arq.cli.run_worker = start
from arq.utils import import_string
settings = import_string("worker.settings")
seen["imported"] = [type(asyncio.get_event_loop_policy()).__module__, gc.get_freeze_count()]
arq.cli.run_worker(settings)
print(json.dumps(seen))
"""
    out = run_fresh(code, tmp_path)
    seen = json.loads(out.stdout)
    assert seen["imported"] == ["asyncio.unix_events", 0]
    loop, frozen = seen["at start"]
    assert loop == "uvloop"
    assert frozen > 10_000  # the loaded code's objects (about 60,000)


def test_worker_without_tasks_says_how_to_name_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RELAY_TASK_MODULES"}
    code = "from arq.utils import import_string; import_string('worker.settings')"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode != 0
    assert "set RELAY_TASK_MODULES" in out.stderr
    assert "worker.tasks.demo" in out.stderr


def test_jobs_are_json_never_pickle() -> None:
    assert worker.settings.job_serializer is dumps
    assert worker.settings.job_deserializer is loads
    assert dumps({"f": "echo", "a": [1]}) == b'{"f":"echo","a":[1]}'
    with pytest.raises(msgspec.DecodeError):
        loads(pickle.dumps({"f": "echo"}))


def test_failures_serialize_as_typed_json() -> None:
    assert loads(dumps({"r": KeyError("k")})) == {"r": {"error_type": "KeyError", "message": "'k'"}}


def test_every_registered_task_is_an_arq_function() -> None:
    from worker.tasks import registry

    assert sorted(f.name for f in worker.settings.functions) == sorted(spec.name for spec in registry)
    assert worker.settings.allow_abort_jobs is True


def test_a_worker_starts_without_importing_jsonschema(tmp_path: Path) -> None:
    """Arguments the compiled check cannot pass are rare in a worker (its children's submits): jsonschema, about
    0.05 to 0.15 s of a start here, is imported when one comes (``shared.catalogue``), as an API process does at
    its own start."""
    code = (
        "import sys; from arq.utils import import_string; import_string('worker.settings'); "
        "import api.app; print('jsonschema' in sys.modules); api.app.create_app(); print('jsonschema' in sys.modules)"
    )
    out = run_fresh(code, tmp_path)
    assert out.stdout.split() == ["False", "True"]
