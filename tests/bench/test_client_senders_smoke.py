"""``bench.client_senders`` run for real with tiny numbers, so it cannot rot: both senders (and the raw POST for
scale) measured, both ways."""

from __future__ import annotations

import re

from bench import client_senders


def test_each_sender_is_measured_at_random_arrival_and_back_to_back() -> None:
    output = client_senders.main(["--rounds", "1", "--requests", "3", "--wait-quiet", "0"])
    rows = re.findall(r"^\| 1 +\| (.+?) +\| (random|back to back) +\| \d+\.\d\d ", output, re.MULTILINE)
    assert sorted(rows) == sorted(
        (name, arrival)
        for name in [*client_senders.SENDERS, client_senders.POST_STREAM]
        for arrival in ("random", "back to back")
    )
