"""The worker's count of handed jobs kept in step with Redis's (``worker.engine.handoffs``): a hand-off lost on its
way stops costing a slot after two leases, one merely on its way never does, and a count the sweep lowered is
followed. (Found by review: a lost reply left Redis's count one ahead for good, and a worker of one slot claimed
nothing again.)"""

from __future__ import annotations

from worker.engine.handoffs import HandoffCount

LEASE = 10.0


def test_a_gap_that_never_closes_for_two_leases_is_counted_as_lost() -> None:
    count = HandoffCount(LEASE, received=4)
    count.observe(handed=5, received_then=4, now=100.0)  # one popped, its reply lost
    count.observe(handed=5, received_then=4, now=100.0 + LEASE)
    assert count.received == 4  # not yet: it could still be on its way
    count.observe(handed=5, received_then=4, now=100.0 + 2 * LEASE)
    assert count.received == 5  # no longer counted as on its way: the claim sees no slot taken


def test_the_smallest_gap_over_the_two_leases_is_the_lost_part() -> None:
    count = HandoffCount(LEASE, received=10)
    count.observe(handed=12, received_then=10, now=0.0)  # one lost, one on its way
    count.observe(handed=13, received_then=12, now=LEASE)  # the one on its way arrived; a new one is on its way
    count.observe(handed=13, received_then=12, now=2 * LEASE)
    assert count.received == 11  # one lost, absorbed; the rest arrived or will


def test_gaps_that_close_are_hand_offs_on_their_way() -> None:
    count = HandoffCount(LEASE, received=0)
    for second in range(0, 100, 5):  # busy: a hand-off on its way at every other claim, never lost
        received = second // 5
        count.observe(handed=received + second % 2, received_then=received, now=float(second))
        count.received = received
    assert count.received == 19


def test_a_count_the_sweep_lowered_is_followed() -> None:
    # A gap taken as lost was an item never popped (its worker's listener was stuck): the sweep put it back in its
    # lane and took it off Redis's count, now one below the worker's.
    count = HandoffCount(LEASE, received=7)
    count.observe(handed=6, received_then=7, now=0.0)
    assert count.received == 6
