"""``bench.workflows`` runs for real with tiny numbers, on two workers, so it cannot rot. Nothing here asserts a
speed: only that every kind was measured, with a number per step."""

from __future__ import annotations

from bench import workflows


def test_every_kind_is_measured_per_step_with_several_workers() -> None:
    output = workflows.main(["--steps", "3", "--rounds", "1", "--workers", "2"])
    assert "2 worker(s)" in output
    rows = [line.split("|")[1:-1] for line in output.splitlines() if line.startswith("| ") and "steps" not in line]
    assert [row[0].strip() for row in rows] == list(workflows.KINDS)
    for row in rows:
        assert float(row[2]) > 0  # ms per step
        assert float(row[3]) > 0  # Redis commands per step
