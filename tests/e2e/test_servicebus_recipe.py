"""docs/servicebus.md's "Trying it locally without Azure", as typed: the local endpoint on a port of its own choosing
(not 5672, where a local AMQP broker such as RabbitMQ listens), a worker with the bridge, and
scripts/servicebus_send.py sending a task and printing its reply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.harness.client import wait_state
from bench.harness.processes import REPO, ManagedProcess, wait_until
from tests.conftest import StartApi, StartWorker

SERVICEBUS_DOC = REPO / "docs" / "servicebus.md"


def test_local_endpoint_and_send_script(tmp_path: Path, spawn_worker: StartWorker, spawn_api: StartApi) -> None:
    doc = SERVICEBUS_DOC.read_text()
    assert ".venv/bin/python -m bench.harness.servicebus\n" in doc  # as the doc says: no --port
    assert "scripts/servicebus_send.py \\\n    tasks" in doc
    argv = [sys.executable, "-m", "bench.harness.servicebus"]  # no --port: it picks a free one
    bus = ManagedProcess("servicebus", argv, dict(os.environ), tmp_path)
    try:
        wait_until(lambda: "READY " in bus.output(), 30, "the endpoint's READY line")
        connection_string = bus.output().split("READY ", 1)[1].splitlines()[0].strip()
        assert "sb://127.0.0.1:" in connection_string
        assert ":5672;" not in connection_string
        env = {"RELAY_SERVICEBUS_CONNECTION_STRING": connection_string, "RELAY_SERVICEBUS_QUEUE": "tasks"}
        spawn_worker(**env)
        _, base = spawn_api()
        body = json.dumps({"task": "echo", "kwargs": {"message": "hello"}})
        send = [sys.executable, "scripts/servicebus_send.py", "tasks", body, "--message-id", "sb-hello-1"]
        send += ["--reply-to", "replies"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        done = subprocess.run(send, cwd=REPO, env=clean | env, capture_output=True, text=True, timeout=90, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "sent message sb-hello-1 to tasks (the task id is the message id)",
            'reply on replies: {"task_id":"sb-hello-1","state":"succeeded","result":{"echo":"hello"}}',
        ]
        assert wait_state(base, "sb-hello-1", {"succeeded"})["result"] == {"echo": "hello"}
    finally:
        bus.stop()


def test_send_script_needs_the_connection_string() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    argv = [sys.executable, "scripts/servicebus_send.py", "tasks", "{}"]
    done = subprocess.run(argv, cwd=REPO, env=clean, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "set RELAY_SERVICEBUS_CONNECTION_STRING" in done.stderr
