"""worker.engine.tries: the one rule for "is this try the last?" (every path that ends or starts a try asks it)."""

from __future__ import annotations

import pytest

from shared.jobs import JobRecord
from worker.engine import tries


def record(submit_retries: int | None = None, tries_base: int = 0) -> JobRecord:
    kwargs = {} if submit_retries is None else {"max_retries": submit_retries}
    return JobRecord("task", kwargs, 0, "fp", tries_base=tries_base)


@pytest.mark.parametrize(
    ("max_pickups", "policy_retries", "submit_retries", "cap"),
    [
        (5, 0, None, 5),  # RELAY_MAX_PICKUPS is the floor, for lost workers
        (1, 3, None, 4),  # the policy's retries fit
        (5, 3, None, 5),
        (5, 3, 1, 2),  # a submit lowers the tries of every kind, whatever ends them
        (5, 0, 0, 1),  # max_retries 0: one try
        (1, 3, 7, 4),  # never raises them
    ],
)
def test_the_cap_of_a_round(max_pickups: int, policy_retries: int, submit_retries: int | None, cap: int) -> None:
    assert tries.cap(max_pickups, policy_retries, submit_retries) == cap


def test_the_cap_th_pickup_is_the_last_and_the_one_after_it_is_beyond() -> None:
    job = record(submit_retries=1)  # cap 2
    seen = [(c.last, c.beyond) for c in (tries.count(job, n, 3, 5) for n in (1, 2, 3))]
    assert seen == [(False, False), (True, False), (True, True)]


def test_a_manual_retry_starts_a_new_round() -> None:
    job = record(tries_base=4)  # four pickups before the retry; cap 5 again
    assert tries.count(job, 5, 0, 5).number == 1
    assert not tries.count(job, 8, 0, 5).last
    assert tries.count(job, 9, 0, 5).last


@pytest.mark.parametrize("submit_retries", [None, 0, 2])
def test_allowed_retries_are_the_policy_s_lowered_by_the_submit(submit_retries: int | None) -> None:
    expected = 3 if submit_retries is None else min(3, submit_retries)
    assert tries.allowed_retries(3, record(submit_retries)) == expected
