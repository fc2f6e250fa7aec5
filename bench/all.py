"""Every benchmark in one go, with the machine facts, as Markdown (what BENCHMARKS.md is built from).

Usage: .venv/bin/python -m bench.all [--out results.md] [--no-wait-quiet] [--experiments] [--label TEXT]

Each benchmark runs with its defaults and starts (and stops, by PID) its own Redis and processes.
The machine has 2 cores and may be shared (another session's test run, say), so before each
benchmark this waits up to 5 minutes for other processes to go quiet and prints the load it saw;
each benchmark also reports the other load during its own run. ``--experiments`` adds the runs of
the worker experiment (``bench.patched_worker``) next to the real worker.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench import fanout, http_submit, latency, scaling, worker_throughput
from bench.common import machine_facts, table, wait_until_quiet
from tests.support.processes import REPO

Step = tuple[str, Callable[[list[str] | None], str], list[str]]


def steps(experiments: bool) -> list[Step]:
    """(command, entry point, arguments) in the order they run."""
    plan: list[Step] = [
        ("bench.worker_throughput", worker_throughput.main, ["--with-patched"] if experiments else []),
        ("bench.scaling", scaling.main, []),
        ("bench.http_submit", http_submit.main, []),
        ("bench.latency", latency.main, ["--breakdown"] if experiments else []),
        ("bench.fanout", fanout.main, []),
    ]
    return plan


def source_label() -> str:
    """The commit measured (read-only git), or that this is not a checkout."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
    except OSError:
        return f"{REPO} (git not available)"
    if rev.returncode:
        return f"{REPO} (not a git checkout)"
    return f"{rev.stdout.strip()}{' + uncommitted changes' if dirty.stdout.strip() else ''} in {REPO}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--no-wait-quiet", action="store_true", help="start each benchmark at once")
    parser.add_argument("--experiments", action="store_true", help="also run the patched API/worker")
    parser.add_argument("--label", default="", help="what is being measured (default: the git commit)")
    args = parser.parse_args(argv)
    facts = machine_facts() | {"source": args.label or source_label()}
    parts = ["# Relay benchmarks", table(["fact", "value"], list(facts.items()))]
    print("\n\n".join(parts), flush=True)
    for command, entry, extra in steps(args.experiments):
        quiet = "not waited for" if args.no_wait_quiet else f"{wait_until_quiet():.2f} cores"
        line = f".venv/bin/python -m {command} {' '.join(extra)}".strip()
        print(f"\n## {line}\n(other load before start: {quiet})", flush=True)
        began = time.monotonic()
        output = entry(extra)
        took = f"(took {time.monotonic() - began:.0f} s)"
        print(took, flush=True)
        parts.append(f"## `{line}`\n\nother load before start: {quiet} {took}\n\n{output}")
    text = "\n\n".join(parts) + "\n"
    if args.out:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
