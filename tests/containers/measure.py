"""What the container tests measured (sizes, durations), printed at the end of the run and kept as JSON.

Measurements are reported, never asserted: tests assert behaviour, the numbers go in docs/deploy.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPORT_PATH = Path(__file__).resolve().parents[2] / "build" / "container-test" / "report.json"

_values: dict[str, str | float] = {}


def record(name: str, value: str | float) -> None:
    _values[name] = round(value, 2) if isinstance(value, float) else value


def value(name: str) -> str | float | None:
    return _values.get(name)


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Record how many seconds the block took (only if it completed)."""
    start = time.monotonic()
    yield
    record(name, time.monotonic() - start)


def lines() -> list[str]:
    return [f"{name:<44} {value}" for name, value in _values.items()]


def save() -> Path:
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(json.dumps(_values, indent=2) + "\n")
    return REPORT_PATH
