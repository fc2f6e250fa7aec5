"""``bench.submit_cpu``, ``bench.busy_notices``, ``bench.idle_notices`` and ``bench.http_submit``'s report run
for real with tiny numbers, so they cannot rot.

Nothing here asserts a speed: only that every checkout was measured, with a number, and that the MONITOR log
is read into commands sent and commands run by scripts.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench import busy_notices, http_submit, idle_notices, submit_cpu, wakeups
from bench.harness.processes import REPO


def test_submit_cpu_measures_this_tree_and_another_checkout() -> None:
    output = submit_cpu.main(["--submits", "300", "--rounds", "1", "--tree", str(REPO)])
    rows = [line for line in output.splitlines() if re.search(r"\| \d+\.\d +\| \d+\.\d", line)]
    assert rows[0].split("|")[1].strip() == "this tree"
    assert len(rows) == 2  # and the other checkout's


def test_busy_notices_counts_claims_and_commands_per_submit() -> None:
    output = busy_notices.main(["--workers", "1", "--submits", "3"])
    row = output.splitlines()[2].split("|")[1:-1]
    assert [cell.strip() for cell in row[:2]] == ["1", "3"]
    assert row[3].strip().isdigit()  # the claim calls counted
    assert float(row[5]) > float(row[4]) > 0  # the enqueues seen, and the commands their script ran


def test_idle_notices_counts_claims_and_commands_per_submit_of_each_workload() -> None:
    output = idle_notices.main(["--workers", "2", "--submits", "3", "--workloads", "limited,deferred"])
    rows = [line.split("|")[1:-1] for line in output.splitlines()[2:4]]
    assert [row[0].strip() for row in rows] == ["limited", "deferred"]
    for row in rows:
        assert int(row[4]) >= 3  # a claim for each job, at least (none is handed off)
        assert float(row[6]) > 0


def test_monitor_lines_are_split_into_sent_and_scripted_commands(tmp_path: Path) -> None:
    log = tmp_path / "monitor.txt"
    log.write_text(
        "OK\n"
        '1733500000.000001 [0 127.0.0.1:5000] "evalsha" "abc" "2" "q" "i"\n'
        '1733500000.000002 [0 lua] "EXISTS" "arq:job:1" "arq:result:1"\n'
        '1733500000.000003 [0 lua] "ZADD" "lane" "1.000" "1"\n'
        '1733500000.000004 [0 127.0.0.1:5001] "info" "commandstats"\n'
        '1733500000.000005 [0 127.0.0.1:5000] "evalsha" "abc" "2"\n'
    )
    sent, scripted = http_submit.monitored(log)
    assert sent == {"evalsha": 2}
    assert scripted == {"exists": 1, "zadd": 1}


def test_the_wakeups_bench_times_every_hop_in_both_modes() -> None:
    results = wakeups.measure(requests=5, rounds=1)
    assert [r.hop for r in results] == [
        "redis PING", "python echo", "bare Sanic POST", "Relay GET /", "Relay POST /tasks"
    ]  # fmt: skip
    assert all(min(r.b2b_p50, r.b2b_p99, r.paused_p50, r.paused_p99) > 0 for r in results)
    assert "| Relay POST /tasks |" in wakeups.report(results, 5, 1, 0.0)
