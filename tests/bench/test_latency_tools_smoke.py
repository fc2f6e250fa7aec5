"""``bench.timeline`` and ``bench.ab_round_trip`` run for real with tiny numbers, so they cannot rot: every step of
a round trip is marked by the process that takes it, and both trees of an A/B are measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench import ab_round_trip

REPO = Path(__file__).resolve().parents[2]
STEPS = [
    "client: request sent",
    "api: request bytes in",
    "api: route runs",
    "enqueue sent",
    "enqueue answered",
    # No wake-up notice or claim on every round trip since the hand-off: the enqueue hands the job to the idle worker
    # (the worker claims now and then, after a round trip, to renew its registration).
    "api: headers written",
    "worker: task starts",
    "worker: task ended",
    "commit sent",
    "commit answered",
    "api: event message in",
    "api: first event written",
    "client: run() returned",
]


def test_the_timeline_has_every_step_of_a_round_trip_in_both_modes() -> None:
    # A process of its own: the marks patch Relay's client in the process that measures.
    argv = [sys.executable, "-m", "bench.timeline", "--requests", "5"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    modes = done.stdout.split("## ")[1:]
    assert [mode.split("\n")[0] for mode in modes] == [
        "at random arrival (a 0-20 ms pause before each request)",
        "back to back",
    ]
    for mode in modes:
        steps = re.findall(r"^\| ([a-z(][^|]*?)(?: \(in \d+ of 5\))? +\| +\d+\.\d{3} ", mode, re.MULTILINE)
        assert set(STEPS) <= set(steps), mode


def test_the_ab_round_trip_measures_both_trees_pair_by_pair() -> None:
    output = ab_round_trip.main(["--tree", str(REPO), "--requests", "3", "--rounds", "1"])
    rows = re.findall(r"^\| (\S+) \(.+?\) +\| \d+\.\d\d / \d+\.\d\d +\| 3 +\|$", output, re.MULTILINE)
    assert rows == [str(REPO), str(REPO)]
    assert re.search(r"median of the per-pair ratios, .+: \d\.\d{3}", output)
