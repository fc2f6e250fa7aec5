"""The test suite's layer over ``bench.harness.processes``: its processes also run the tasks that only the
tests register (``tests.support.tasks``), which the benchmarks never load."""

from __future__ import annotations

from bench.harness import processes

TEST_TASK_MODULES = f"{processes.DEMO_TASK_MODULES},tests.support.tasks"


def relay_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """``processes.relay_env`` whose workers run the test tasks too (unless ``RELAY_TASK_MODULES`` is given)."""
    return processes.relay_env(redis_url, **({"RELAY_TASK_MODULES": TEST_TASK_MODULES} | overrides))


def offer_test_tasks(redis_url: str, queue_name: str) -> None:
    """Offer the test suite's tasks on ``queue_name`` as a live worker would (``processes.offer_tasks``)."""
    processes.offer_tasks(redis_url, queue_name, TEST_TASK_MODULES)
