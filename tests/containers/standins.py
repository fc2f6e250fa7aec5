"""Local stand-ins for the registry images the Dockerfile and compose name, built from Debian packages.

Where no registry can be reached, ``python:3.11-slim-bookworm`` and ``redis:7.4-alpine`` are built with
``debootstrap`` and ``docker import`` and tagged with those names, so the Dockerfile and docker-compose.yml are
used unchanged. A real image already present under the name is used as it is. A stand-in carries a label with
the hash of its recipe: it is rebuilt only when missing or when its recipe changed.

Each stand-in behaves like the image it replaces where Relay depends on it. Python: a CPython 3.11.3+ in
/usr/local with venv and ensurepip (see host_python.py for why not Debian's 3.11.2), and this machine's CA
bundle, so pip reaches PyPI through an intercepting proxy too. Redis: redis-server and redis-cli, a ``redis``
user with uid 999 and gid 1000 owning ``/data``, and an entrypoint that, like the official one, starts
``redis-server`` as that user with protected mode off.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.containers import host_python
from tests.containers.engine import DockerError, Engine

LABEL = "org.relay.stand-in"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBOOTSTRAP_SECONDS = 900
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Run in the new root (chroot) after debootstrap; the image gets no apt lists, package cache or docs.
SLIM = "rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/* " + " ".join(
    f"/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")
)

PYTHON_IMAGE = "python:3.11-slim-bookworm"
PYTHON_SETUP = f"""
set -e
ldconfig
# Every stdlib module Relay or pip needs must load against the Debian libraries installed here.
python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, hashlib, decimal, uuid, readline, venv, ensurepip'
printf '[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n' > /etc/pip.conf
{SLIM}
"""

REDIS_ENTRYPOINT = r"""#!/bin/sh
# Stand-in for the official redis image's entrypoint: options alone mean redis-server; started as root, it
# hands /data to the redis user and re-executes itself as that user. Protected mode is off by default, as in
# the official image (it is built that way): the network is the container's own.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
if [ "$1" = redis-server ] && [ "${2:-}" != - ] && [ "${2%.conf}" = "${2:-}" ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
"""

REDIS_SETUP = rf"""
set -e
# redis-tools already made a redis user; give it the official image's ids (the Kubernetes pod runs as them).
old_uid=$(id -u redis) old_gid=$(id -g redis)
groupmod --gid 1000 redis
usermod --uid 999 --gid 1000 --home /data redis
find / -xdev \( -uid "$old_uid" -o -gid "$old_gid" \) -exec chown -h redis:redis '{{}}' +
mkdir -p /data && chown redis:redis /data
# Debian ships redis-server as a name of the multi-call binary in redis-tools.
ln -sf redis-check-rdb /usr/bin/redis-server
cat > /usr/local/bin/docker-entrypoint.sh <<'EOF'
{REDIS_ENTRYPOINT}EOF
chmod 755 /usr/local/bin/docker-entrypoint.sh
{SLIM}
"""


@dataclass(frozen=True)
class StandIn:
    """How to make a local image that can take a registry image's name."""

    name: str
    packages: tuple[str, ...]
    setup: str
    changes: tuple[str, ...]
    ca_bundle: bool = False
    copy_in: Callable[[Path], None] | None = None
    identity: str = ""

    def recipe_hash(self) -> str:
        parts = [SUITE, *self.packages, self.setup, *self.changes, self.identity]
        if self.ca_bundle:
            parts.append(hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest())
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def python() -> StandIn:
    """The python stand-in: this machine's CPython in /usr/local, on Debian with the libraries it loads."""
    prefix = host_python.base()
    return StandIn(
        name=PYTHON_IMAGE,
        packages=("ca-certificates", "netbase", "tzdata", *host_python.runtime_packages(prefix)),
        setup=PYTHON_SETUP,
        changes=(f"ENV PATH={PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]'),
        ca_bundle=True,
        copy_in=host_python.copy_into,
        identity=host_python.identity(),
    )


REDIS = StandIn(
    name="redis:7.4-alpine",
    packages=("redis-tools",),
    setup=REDIS_SETUP,
    changes=(
        f"ENV PATH={PATH}",
        "WORKDIR /data",
        "VOLUME /data",
        "EXPOSE 6379",
        'ENTRYPOINT ["docker-entrypoint.sh"]',
        'CMD ["redis-server"]',
    ),
)


def ensure(engine: Engine, standin: StandIn, log_dir: Path) -> str:
    """Make ``standin.name`` available; say which it is: the real image, a cached stand-in, or a new one."""
    wanted = standin.recipe_hash()
    outdated = None
    if engine.image_exists(standin.name):
        image = engine.inspect(standin.name)[0]
        labels = image["Config"].get("Labels") or {}
        if LABEL not in labels:
            return "real image"
        if labels[LABEL] == wanted:
            return "stand-in (cached)"
        outdated = image["Id"]
    build(engine, standin, wanted, log_dir)
    if outdated:
        engine.run("image", "rm", outdated, check=False)  # our own older stand-in, now untagged
    return "stand-in (built now)"


def build(engine: Engine, standin: StandIn, recipe: str, log_dir: Path) -> None:
    """debootstrap a minimal Debian with the packages, set it up in a chroot, import it under the name."""
    if shutil.which("debootstrap") is None:
        raise DockerError(f"{standin.name} is not present and debootstrap is missing: apt-get install debootstrap")
    log_path = log_dir / f"standin-{standin.name.replace(':', '_').replace('/', '_')}.log"
    with tempfile.TemporaryDirectory(prefix="relay-standin-", dir="/var/tmp") as tmp, log_path.open("w") as log:
        root = Path(tmp) / "root"
        debootstrap = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(standin.packages)}",
            SUITE,
            str(root),
            MIRROR,
        ]
        run_logged(debootstrap, log, log_path, DEBOOTSTRAP_SECONDS)
        if standin.ca_bundle:
            shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        if standin.copy_in is not None:
            standin.copy_in(root)
        run_logged(["chroot", str(root), "/bin/sh", "-c", standin.setup], log, log_path, 120)
        changes = [arg for change in (*standin.changes, f"LABEL {LABEL}={recipe}") for arg in ("--change", change)]
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            run_logged([engine.cli, "import", *changes, "-", standin.name], log, log_path, 300, stdin=tar.stdout)
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar.wait(60)


def run_logged(argv: list[str], log: IO[str], log_path: Path, timeout: float, stdin: IO[bytes] | None = None) -> None:
    """Run a build step with its output in the log; a failure names the log."""
    log.flush()
    result = subprocess.run(argv, stdin=stdin, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    if result.returncode != 0:
        raise DockerError(f"{argv[0]} exited {result.returncode} building a stand-in; see {log_path}")
