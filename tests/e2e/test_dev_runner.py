"""The README's one command: Redis, worker and API up; Ctrl-C stops them all, API first, Redis last."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.client import read_events, submit_ok, types
from tests.support.processes import REPO, free_port, wait_until


def test_dev_runner_starts_everything_and_stops_in_order(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    log = (tmp_path / "dev.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    argv = [sys.executable, "scripts/devrun.py", "--port", str(port), "--redis-port", str(redis_port)]
    runner = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "Relay is up" in (tmp_path / "dev.log").read_text(), 60, "the dev runner")
        task_id = submit_ok(base, {"task": "echo", "args": ["dev"]})
        assert types(read_events(base, task_id)) == ["started", "result", "end"]
        runner.send_signal(signal.SIGINT)
        assert runner.wait(60) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        log.close()
    output = (tmp_path / "dev.log").read_text()
    assert "Traceback" not in output
    stops = re.findall(r"stopping (api|worker-1|redis)", output)
    assert stops == ["api", "worker-1", "redis"]
    for pid in re.findall(r"started \S+ \(pid (\d+)\)", output):
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
