"""Run INSIDE the Relay image (``python - <json>`` on stdin): report what the runtime image holds, as JSON.

Standard library only, and nothing from the repository: the image has no copy of it (that is one of the
things checked). The argument is the list of the project's source paths relative to the repo (api/app.py ...).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator

VENV = "/opt/venv"
SKIP = ("/proc", "/sys", "/dev", VENV)
TOOLS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as")


def interpreter_dirs() -> list[str]:
    """Where the base interpreter keeps its own library and site-packages (not the venv's)."""
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix, "installed_base": sys.base_prefix}
    found: set[str] = set()
    for scheme in sysconfig.get_scheme_names():
        paths = sysconfig.get_paths(scheme=scheme, vars=base)
        found.update(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths)
    return sorted(d for d in found if os.path.isdir(d) and not d.startswith(VENV))


def python_files_outside_venv() -> Iterator[str]:
    for top, dirs, files in os.walk("/"):
        if top.startswith(SKIP):
            dirs[:] = []
            continue
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(top, name)


def dpkg_owned(paths: list[str]) -> list[str]:
    """The subset of paths a Debian package installed (dpkg-query prints 'pkg: path' for those)."""
    if not paths or shutil.which("dpkg-query") is None:
        return []
    out = subprocess.run(["dpkg-query", "-S", *paths], capture_output=True, text=True, check=False).stdout
    listed = {line.split(": ", 1)[1] for line in out.splitlines() if ": " in line}
    return [p for p in paths if p in listed]


def root_mount_options() -> list[str]:
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1] == "/":
                return fields[3].split(",")
    return []


def main() -> None:
    sources = json.loads(sys.argv[1])
    own = interpreter_dirs()
    every = list(python_files_outside_venv())
    outside = [p for p in every if not p.startswith(tuple(d + "/" for d in own))]
    modules = {}
    for name in ("api", "worker", "shared"):
        spec = importlib.util.find_spec(name)
        modules[name] = spec.origin if spec else None
    report = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "tools": {t: shutil.which(t) for t in TOOLS if shutil.which(t)},
        "src_exists": os.path.exists("/src"),
        "workdir": os.getcwd(),
        "workdir_entries": sorted(os.listdir(os.getcwd())),
        "modules": modules,
        "interpreter_dirs": own,
        "python_outside_interpreter": outside,
        "python_outside_dpkg_owned": dpkg_owned(outside),
        "project_copies_outside_venv": [p for p in every if p.endswith(tuple("/" + s for s in sources))],
        "root_mount_options": root_mount_options(),
        "tmp_writable": os.access("/tmp", os.W_OK),
    }
    json.dump(report, sys.stdout)


main()
