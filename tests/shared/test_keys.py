"""Relay's Redis keys are unambiguous for every valid task id and queue name."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import keys
from shared.settings import Settings
from shared.tasks import TASK_ID_REGEX, is_task_id

PER_TASK = {
    "events": keys.events_stream,
    "seq": keys.event_seq,
    "event_bytes": keys.event_bytes,
    "reply": keys.reply_request,
    "job": keys.job,
    "result": keys.result,
    "in_progress": keys.in_progress,
    "tries": keys.tries,
}
PER_QUEUE = {
    "index": keys.task_index,
    "outbox": keys.reply_outbox,
    "maintenance": keys.maintenance_lock,
    "presence": keys.worker_presence,
}
task_ids = st.from_regex(TASK_ID_REGEX, fullmatch=True)


def test_no_prefix_is_a_prefix_of_another() -> None:
    prefixes = [f("") for f in PER_TASK.values()] + [f("") for f in PER_QUEUE.values()]
    for a, b in itertools.permutations(prefixes, 2):
        assert not a.startswith(b), (a, b)


@given(task_ids, task_ids)
def test_two_kinds_of_key_never_meet(a: str, b: str) -> None:
    for (kind_a, key_a), (kind_b, key_b) in itertools.product(PER_TASK.items(), repeat=2):
        if key_a(a) == key_b(b):
            assert (kind_a, a) == (kind_b, b)


def test_the_colliding_pair_of_the_old_scheme_is_now_two_keys() -> None:
    # Before: reply_request("x:sent") == reply_sent("x") == "relay:reply:x:sent".
    assert keys.reply_request("x:sent") not in {keys.reply_request("x"), *(f("x") for f in PER_TASK.values())}


@pytest.mark.parametrize("value", ["abc\n", "abc\r\n", " abc", "abc ", "a/b", "", "a" * 129])
def test_ids_are_matched_whole(value: str) -> None:
    assert not is_task_id(value)


def test_a_queue_name_that_would_share_keys_is_refused() -> None:
    for name in ("relay:seq", "relay:events:x", "arq:job:x", "arq:abort"):
        with pytest.raises(ValueError, match="cannot be used"):
            Settings(queue_name=name)
    assert Settings(queue_name="relay:queue").queue_name == "relay:queue"
