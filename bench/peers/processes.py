"""Worker processes and client processes of the systems under test, each stopped by PID.

A worker group can be paused (SIGSTOP on the whole process tree: Celery's and taskiq's pool children
too) while jobs are preloaded, then resumed: the drain clock then starts at SIGCONT, with every system's
worker already connected and waiting, whatever its start-up time.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import redis

from bench.common import cpu_seconds, wait_for_output
from bench.harness.processes import ManagedProcess, wait_until
from bench.peers.client import Target
from bench.peers.spec import REPO, Profile, System


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren ...), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        found += frontier
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class WorkerGroup:
    """``count`` worker processes of one system and profile."""

    def __init__(self) -> None:
        self.procs: list[ManagedProcess] = []
        self.seen: dict[int, int] = {}  # every PID of the tree we saw -> its start time, to stop them all

    def launch(
        self, system: System, profile: Profile, bin_dir: Path, redis_url: str, log_dir: Path, count: int
    ) -> None:
        """Start ``count`` workers (each is in ``procs`` as soon as it exists, so ``stop`` reaches it)."""
        env = system.worker_env(redis_url) | profile.worker_env
        for n in range(count):
            self.procs.append(
                ManagedProcess(f"{system.name}-{profile.name}-{n}", system.worker_argv(bin_dir), env, log_dir)
            )

    def wait_ready(self, system: System, client: redis.Redis, timeout: float = 60) -> None:
        """Until every worker printed its ready line and Redis sees its consumers waiting for jobs."""
        ready = system.ready
        if ready.marker:
            for proc in self.procs:
                wait_for_output(proc, ready.marker, timeout)
        if ready.command:
            wanted = ready.clients * len(self.procs)

            def consuming() -> bool:
                self._check_alive()
                clients = cast(list[dict[str, str]], client.client_list())
                return sum(c.get("cmd") == ready.command for c in clients) >= wanted

            wait_until(consuming, timeout, f"{wanted} {system.name} consumer(s) in {ready.command}")
        self.pids()

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-4000:]}")

    def pids(self) -> list[int]:
        """The worker processes and everything below them, parents first."""
        pids = [pid for proc in self.procs for pid in [proc.pid, *descendants(proc.pid)]]
        for pid in pids:
            if pid not in self.seen and (started := _start_time(pid)) is not None:
                self.seen[pid] = started
        return pids

    def pause(self) -> list[int]:
        """SIGSTOP the whole tree; returns the PIDs to resume (so resuming needs no /proc scan)."""
        pids = self.pids()
        _signal(pids, signal.SIGSTOP)
        return pids

    def resume(self, pids: list[int] | None = None) -> None:
        _signal(list(reversed(pids if pids is not None else self.pids())), signal.SIGCONT)

    def cpu(self) -> float:
        """CPU seconds used so far by the whole tree."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def output(self) -> str:
        return "\n".join(p.output()[-3000:] for p in self.procs)

    def stop(self) -> None:
        """SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM each worker, then SIGKILL any PID of the
        tree still alive (pool children a killed parent left behind)."""
        self.pids()  # note any child started since we last looked
        self.resume()
        for proc in self.procs:
            proc.stop()
        mains = {p.pid for p in self.procs}
        leftovers = [pid for pid, started in self.seen.items() if pid not in mains and _start_time(pid) == started]
        _signal(leftovers, signal.SIGKILL)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (tells a PID from a later process that reused it); None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


class ClientError(RuntimeError):
    """The client process reported an error (its traceback is the message)."""


class ClientSession:
    """One system's client process (``bench.peers.client``) in that system's virtualenv, spoken to in JSON lines."""

    def __init__(self, system: System, python: Path, target: Target, env: dict[str, str], log_dir: Path) -> None:
        self.name = f"client-{system.name}"
        self.log_path = log_dir / f"{self.name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        argv = [str(python), "-m", "bench.peers.client", system.adapter, json.dumps(asdict(target))]
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        try:
            self._read(timeout=60)  # "ready": the library is imported and connected
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, op: str, timeout: float = 900, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(timeout)

    def _read(self, timeout: float) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            raise ClientError(f"{self.name} gave no answer within {timeout}s:\n{self.output()}")
        message = json.loads(line)
        if "error" in message:
            raise ClientError(f"{self.name}: {message['error']}")
        return message["ok"]

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Ask it to quit (it closes its connections), then SIGTERM / SIGKILL by PID if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # type: ignore[union-attr]
        self._log.close()
