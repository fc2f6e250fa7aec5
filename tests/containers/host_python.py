"""The CPython of the python stand-in: the one this machine runs Relay with, laid out as the official image does.

Why not Debian's python3: bookworm's is 3.11.2, and below 3.11.3 redis-py times its reads with async-timeout,
under which a Redis command awaited in a cancelled task raises CancelledError at once. Relay's workers read
and write Redis while handling a cancel (abort, shutdown re-queue), so on 3.11.2 an aborted task never gets its
``aborted`` event: pyproject requires 3.11.3. The official ``python:3.11-slim-bookworm`` builds a current 3.11
into /usr/local on Debian; this copies the interpreter running these tests (pyenv's here) to the same place,
without its site-packages, tests and Tk, and installs the Debian libraries its modules link against (the
official Dockerfile finds those the same way: ldd, then dpkg-query).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.containers.engine import DockerError

VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# What the official image deletes from its /usr/local too, plus Tk (no display in a service image).
DROPPED = ("test", "tests", "idle_test", "__pycache__", "tkinter", "idlelib", "turtledemo", "site-packages")


def base() -> Path:
    """The installation behind this (venv's) interpreter; refuses one that is not a CPython 3.11.3+."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11) or sys.version_info < (3, 11, 3):
        raise DockerError(f"the python stand-in needs CPython 3.11.3+ to copy; this is {sys.version}")
    return Path(sys.base_prefix)


def identity() -> str:
    """What the stand-in's recipe depends on: which interpreter gets copied."""
    return f"{base()} {sys.version}"


def linked_files(prefix: Path) -> set[str]:
    """Shared libraries outside ``prefix`` that the interpreter and its extension modules load."""
    binaries = [
        prefix / "bin" / f"python{VERSION}",
        *(prefix / "lib" / f"python{VERSION}" / "lib-dynload").glob("*.so"),
    ]
    found: set[str] = set()
    for binary in binaries:
        if "tkinter" in binary.name:
            continue
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30, check=False).stdout
        for line in out.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and parts[1].split() and parts[1].split()[0].startswith("/"):
                path = parts[1].split()[0]
                if not path.startswith(str(prefix)):
                    found.add(path)
    return found


def runtime_packages(prefix: Path) -> tuple[str, ...]:
    """The Debian packages that ship those libraries (by path, or by the path the symlink resolves to)."""
    packages: set[str] = set()
    for path in sorted(linked_files(prefix)):
        for candidate in (path, str(Path(path).resolve())):
            query = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, timeout=30)
            if query.returncode == 0:
                packages.update(line.split(":")[0] for line in query.stdout.splitlines())
                break
        else:
            raise DockerError(f"no Debian package ships {path}, which the host's Python loads")
    return tuple(sorted(packages))


def copy_into(root: Path) -> None:
    """Install the interpreter under ``root``/usr/local: bin/python3.11 (+ python3, python), libpython, stdlib."""
    prefix = base()
    local = root / "usr" / "local"
    (local / "bin").mkdir(parents=True, exist_ok=True)
    (local / "lib").mkdir(parents=True, exist_ok=True)
    shutil.copy2(prefix / "bin" / f"python{VERSION}", local / "bin" / f"python{VERSION}")
    for alias in ("python3", "python"):
        (local / "bin" / alias).unlink(missing_ok=True)
        (local / "bin" / alias).symlink_to(f"python{VERSION}")
    for library in (prefix / "lib").glob("libpython3*.so*"):
        shutil.copy2(library, local / "lib" / library.name, follow_symlinks=False)
    stdlib = f"python{VERSION}"
    shutil.copytree(
        prefix / "lib" / stdlib,
        local / "lib" / stdlib,
        symlinks=True,
        ignore=lambda _, names: [n for n in names if n in DROPPED or n.endswith((".a", ".pyc")) or "tkinter" in n],
    )
    (local / "lib" / stdlib / "site-packages").mkdir()
