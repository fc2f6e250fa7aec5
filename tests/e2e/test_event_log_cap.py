"""A task with more events than its log keeps (``RELAY_EVENT_LOG_MAX_LEN``): a reader who asks for events
the log dropped gets one ``gap`` event naming them, then the rest with no further jump, never a silent
start mid-way. (The log trimmed by expiry during a long silence is in ``test_lifecycle.py``.)"""

from __future__ import annotations

import uuid
from typing import Any

from bench.harness.client import read_events, submit_ok, types, wait_state
from tests.conftest import StartApi, StartWorker

EVENTS = 500  # partial results; Redis trims a stream only in whole nodes of 100 entries


def _follows_the_gap_without_a_jump(events: list[dict[str, Any]], first_missing: int) -> None:
    gap, rest = events[0], events[1:]
    assert gap["type"] == "gap"
    assert gap["data"] == {"first_seq": first_missing, "last_seq": rest[0]["seq"] - 1}
    assert gap["seq"] == rest[0]["seq"] - 1  # a resume from the gap's seq continues right after it
    seqs = [e["seq"] for e in rest]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert types(rest)[-2:] == ["result", "end"]


def test_a_reader_of_a_capped_log_is_told_which_events_it_dropped(
    spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": f"relay:cap:{uuid.uuid4().hex[:8]}", "RELAY_EVENT_LOG_MAX_LEN": "10"}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    task_id = submit_ok(base, {"task": "count", "kwargs": {"n": EVENTS, "interval": 0}})
    wait_state(base, task_id, {"succeeded"})
    total = EVENTS + 3  # started, the partials, result, end

    from_start = read_events(base, task_id)
    _follows_the_gap_without_a_jump(from_start, first_missing=1)
    assert from_start[-1]["seq"] == total
    assert len(from_start) - 1 < total / 2  # most were dropped: this is the capped case, not a full replay

    resumed = read_events(base, task_id, after=5)
    _follows_the_gap_without_a_jump(resumed, first_missing=6)
    assert resumed[1:] == from_start[1:]
