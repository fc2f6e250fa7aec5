"""A benchmark stopped with SIGTERM still stops what it started (``bench.common.bench_scope``): Python's default
SIGTERM exits at once, and a killed ``bench.soak`` left its redis-server, API and worker running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import sys, time
from bench.common import bench_scope
from bench.harness.processes import ManagedProcess
with bench_scope() as bench:
    sleeper = bench.own(ManagedProcess("sleeper", ["sleep", "600"], {}, bench.log_dir))
    print(sleeper.pid, flush=True)
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its parent) counts as gone.
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


def test_a_benchmark_stopped_with_sigterm_stops_the_processes_it_started() -> None:
    bench = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True)
    sleeper = 0
    try:
        assert bench.stdout is not None
        sleeper = int(bench.stdout.readline())
        assert alive(sleeper)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while alive(sleeper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(sleeper), "the benchmark's own process outlived it"
    finally:
        bench.kill()
        bench.wait()
        if sleeper and alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)
