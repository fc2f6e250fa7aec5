"""``bench.scheduling`` run for real with tiny numbers, every part, so it cannot rot.

Nothing here asserts a speed or a latency: only that each part measured what it says (every job accounted for,
numbers in every table), that the concurrency limit's overlap is a number a limit of 3 allows, and that every
process the parts started is gone afterwards. The comparison with an older checkout runs against this one.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from bench.harness.processes import REPO
from bench.scheduling import __main__ as cli
from bench.scheduling import concurrency, drain, fairness, priority, rate
from tests.support.heavy import heavy


def _children() -> list[int]:
    """Live (not zombie) child processes of this one."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.timeout(110)
@heavy
def test_every_part_measures_with_tiny_numbers_and_leaves_nothing_running() -> None:
    before = set(_children())
    options, _ = cli.parse(
        [
            "--priority-backlog", "300", "--priority-submits", "5", "--priority-gap-ms", "5",
            "--concurrency-jobs", "12", "--concurrency-workers", "2", "--concurrency-task-ms", "20",
            "--rate-jobs", "25", "--rate-workers", "2", "--rate-window", "0.2", "--rate-monitor-seconds", "0.1",
            "--fairness-backlog", "100", "--fairness-submits", "3", "--fairness-task-ms", "5",
            "--drain-jobs", "200", "--drain-rounds", "1", "--baseline", str(REPO), "--baseline-rounds", "1",
        ]
    )  # fmt: skip
    printed: list[str] = []
    results, failures = cli.run(options, printed.append)
    text = "\n".join(printed)
    print(text)  # shown with a failure

    assert failures == {}
    assert set(results) == set(cli.PARTS)
    p: priority.Result = results["priority"]
    assert len(p.latencies_ms) == 5
    assert min(p.latencies_ms) > 0
    c: concurrency.Result = results["concurrency"]
    assert len(c.runs) == 12
    assert 1 <= concurrency.most_at_once(c.runs) <= 3
    assert max(r["running"] for r in c.runs) <= 3
    r: rate.Result = results["rate"]
    assert len(r.starts) == 25
    assert sum(n for _, n, _ in r.windows()) == 25
    assert r.held.commands
    assert r.held.seconds > 0
    f: fairness.Result = results["fairness"]
    assert (len(f.a_runs), len(f.b_runs)) == (100, 3)
    m: drain.Result = results["mixed"]
    assert [len(m.plain), len(m.named), len(m.before), len(m.today)] == [1, 1, 1, 1]
    assert min(m.plain + m.named + m.before + m.today) > 0
    assert set(m.code) == {"before", "today"}
    assert text.count("### ") == 5
    assert "FAILED" not in text
    assert re.search(r"\b(nan|inf)\b", text, re.IGNORECASE) is None
    assert all(math.isfinite(x) for x in p.latencies_ms)
    assert set(_children()) <= before
