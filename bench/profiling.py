"""Sample a running process with py-spy and summarise where its CPU went (the evidence BENCHMARKS.md cites).

py-spy (``.venv/bin/pip install py-spy``) attaches by PID, so the process under test runs unchanged.
It pauses the process for each sample, so a profiled run is slower: benchmarks profile in an extra
phase and never report a profiled run's throughput as the measurement.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_LINE_NO = re.compile(r":\d+\)")


def py_spy_path() -> str | None:
    """py-spy next to this interpreter (the venv) or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def sampled(pid: int, seconds: float, out: Path, rate: int = 100) -> Iterator[None]:
    """Record ``pid`` for ``seconds`` while the block runs; the raw (collapsed) stacks land in ``out``."""
    spy = py_spy_path()
    if spy is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    argv = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate), "-f", "raw", "-o", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def summarize(raw: Path, top: int = 30, min_pct: float = 1.0) -> str:
    """Inclusive and self share of samples per function (line numbers folded), biggest first."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        frames = [_LINE_NO.sub(")", f) for f in stack.split(";")]
        total += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
        own[frames[-1]] += int(count)
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; inclusive share (function and everything it called):"]
    lines += _shares(inclusive, total, top, min_pct)
    lines.append("self share (the function's own code):")
    lines += _shares(own, total, top // 2, min_pct)
    return "\n".join(lines)


def _shares(counter: collections.Counter[str], total: int, top: int, min_pct: float) -> list[str]:
    # Frames every sample shares (the CLI entry point, the event loop) say nothing: skip them.
    rows = [(n, f) for f, n in counter.most_common() if n < total * 0.97 and 100 * n / total >= min_pct]
    return [f"  {100 * n / total:5.1f}%  {f}" for n, f in rows[:top]]


def share_of(raw: Path, needle: str) -> float:
    """Fraction of samples whose stack contains ``needle`` (a function name such as ``EventLog.publish``)."""
    hit = total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        total += int(count)
        hit += int(count) if needle in stack else 0
    return hit / total if total else 0.0
