"""``arq worker.settings`` must load from a fresh process and hand arq nothing but its own arguments."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import types
from pathlib import Path

import msgspec
import pytest
from arq.worker import Worker

import worker
from shared.serialization import dumps, loads


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
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "['count', 'echo', 'fail', 'sleep']"


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
