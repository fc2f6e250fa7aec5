"""The peers' own virtualenv (``.bench-peers-venv/``, git-ignored), created and filled on first use.

Relay's virtualenv stays as it is: the peers pull in their own dependencies (Celery's kombu, taskiq's
stack), and each system's worker and clients run from the virtualenv it was installed into. redis-py is
pinned to Relay's version (arq 0.28 needs redis<6), so every system but streaq talks to Redis through
the same client library and parser; that is also why taskiq stays below 0.12 with taskiq-redis 1.0.9.
streaq is built on coredis (and anyio), so those two are pinned for it. Every pin is exact, and kombu is
pinned too: left open, pip backtracks into old releases that do not build.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.peers.spec import REPO

VENV = REPO / ".bench-peers-venv"
# Celery 5.6, not 5.7: kombu 5.7's Redis transport needs redis-py >= 6.1.
PEER_PINS = (
    *("saq==0.26.4", "taskiq==0.11.20", "taskiq-redis==1.0.9", "celery==5.6.3", "kombu==5.6.2"),
    *("streaq==7.2.0", "coredis==6.9.0", "anyio==4.16.0", "dramatiq==2.2.1"),
)
REPORTED = (
    *("saq", "taskiq", "taskiq-redis", "celery", "kombu", "billiard", "streaq", "coredis", "anyio", "dramatiq"),
    *("redis", "hiredis"),
)
RELAY_REPORTED = ("arq", "redis", "hiredis", "sanic", "uvloop", "httpx", "msgspec")


def pins() -> list[str]:
    """The peers, plus redis-py (with hiredis) at exactly the version Relay's virtualenv has."""
    return [*PEER_PINS, f"redis[hiredis]=={metadata.version('redis')}"]


def bin_dir() -> Path:
    return VENV / "bin"


def ensure() -> Path:
    """Create or update the virtualenv when the pins changed; returns its bin directory. A lock file next to
    it makes a second caller (the smoke test beside a benchmark run) wait rather than install alongside."""
    stamp = VENV / ".bench-pins"
    wanted = "\n".join(pins())
    with (REPO / ".bench-peers-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (bin_dir() / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        if not stamp.exists() or stamp.read_text() != wanted:
            pip = [str(bin_dir() / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            subprocess.run([*pip, *pins()], check=True)
            stamp.write_text(wanted)
    return bin_dir()


def installed(python: Path | str, names: tuple[str, ...]) -> dict[str, str]:
    """Exact versions as that interpreter's ``importlib.metadata`` reports them."""
    code = (
        "import json, sys, importlib.metadata as m\n"
        "def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return 'not installed'\n"
        f"print(json.dumps({{n: v(n) for n in {list(names)!r}}} | {{'python': sys.version.split()[0]}}))"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    versions: dict[str, str] = json.loads(out)
    return versions
