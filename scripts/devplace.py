"""Where a scripts/dev instance lives: free ports, and a data directory no other instance shares.

Two instances once shared ``.relay-dev/`` and both appended to one Redis AOF (and the test suite's
runner test loaded a live instance's jobs). Now each private Redis port has its own directory, held by
a lock for as long as its instance runs; tests pass their own ``--data-dir``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from pathlib import Path
from typing import IO


class Refused(Exception):
    """The runner cannot start as asked; the message says why and what to do instead."""


def check_port_free(host: str, port: int, what: str, option: str) -> None:
    """Refuse before starting anything if something already listens on ``host:port``."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is not "in use"
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise Refused(
                f"port {port} ({what}) is already in use on {host}: is another scripts/dev running? "
                f"Stop it, or choose another port with {option}"
            ) from None


class InstanceDir:
    """``<root>/<redis port>/`` (or ``<root>/external-<api port>/`` with your own Redis): Redis's AOF, the
    children's full logs, and a lock that keeps a second instance out."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = root / name
        self.logs = self.path / "logs"
        self._lock: IO[str] | None = None

    def lock(self) -> None:
        """Take the directory for this process, or refuse naming the process that holds it."""
        self.logs.mkdir(parents=True, exist_ok=True)
        handle = (self.path / "lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise Refused(
                f"{self.path} is in use by another scripts/dev (pid {holder}): stop it, or give this one "
                "another --redis-port (or --data-dir)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle  # held (open) until this process exits

    def reset(self) -> bool:
        """Delete this instance's Redis data (its queue, tasks and events); True if there was any."""
        found = False
        for name in ("appendonlydir", "dump.rdb"):
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
                found = True
            elif target.exists():
                target.unlink()
                found = True
        return found

    def adopt_legacy(self, root: Path) -> bool:
        """Move the AOF an older scripts/dev kept directly in ``root`` into this directory (once)."""
        legacy, target = root / "appendonlydir", self.path / "appendonlydir"
        if not legacy.is_dir() or target.exists():
            return False
        with contextlib.suppress(FileNotFoundError):  # another instance moved it first
            legacy.rename(target)
            return True
        return False
