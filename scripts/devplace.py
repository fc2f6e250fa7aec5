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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class Refused(Exception):
    """The runner cannot start as asked; the message says why and what to do instead."""


@dataclass(frozen=True)
class Ports:
    """Ports one part of an instance listens on: ``count`` consecutive ones from ``first`` (a worker each, for
    the metrics), chosen with ``option``."""

    what: str  # what listens there, as the refusal names it ("the API", "worker-{n}'s metrics")
    option: str
    host: str
    first: int
    count: int = 1

    def busy(self) -> list[tuple[int, str]]:
        """Each of these ports something already listens on, with what would have listened there."""
        return [
            (port, self.what.format(n=i + 1))
            for i, port in enumerate(range(self.first, self.first + self.count))
            if not port_free(self.host, port)
        ]


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is not "in use"
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return False
    return True


def next_free_port(host: str, start: int, avoid: set[int], free: Callable[[str, int], bool] = port_free) -> int:
    """The first port from ``start`` on that is free on ``host`` and not in ``avoid`` (ports an instance has
    taken or is about to suggest); 0 if there is none."""
    return next((port for port in range(start, 65536) if port not in avoid and free(host, port)), 0)


def check_ports_free(wanted: list[Ports]) -> None:
    """Refuse before starting anything if any of the ports is taken, naming every one that is (a second
    scripts/dev once learnt of its conflicts one restart at a time) and options that would be free."""
    busy = [(part, port, what) for part in wanted for port, what in part.busy()]
    if not busy:
        return
    taken = ", ".join(f"{part.host}:{port} ({what})" for part, port, what in busy)
    conflicting = list(dict.fromkeys(part for part, _, _ in busy))
    taken_by_us = {port for part in wanted for port in range(part.first, part.first + part.count)}
    instead = []
    for part in conflicting:
        first = _next_free(part, taken_by_us)
        taken_by_us.update(range(first, first + part.count))  # the next suggestion must not take it too
        instead.append(f"{part.option} {first}")
    raise Refused(
        f"{'port' if len(busy) == 1 else 'ports'} already in use: {taken}. Is another scripts/dev running? "
        f"Stop it, or choose free ports, e.g. scripts/dev {' '.join(instead)}"
    )


def _next_free(part: Ports, avoid: set[int]) -> int:
    """The first port above ``part.first`` from which ``part.count`` ports are free and none is in ``avoid``."""
    first = part.first + 1
    while first + part.count <= 65536:
        block = range(first, first + part.count)
        if not avoid.intersection(block) and all(port_free(part.host, port) for port in block):
            return first
        first += 1
    return 0


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
